"""The ``dask`` engine: training's history kept on a Dask cluster, one SKU range per partition.

Each worker reads its own SKU ranges straight from the feature store (``dask_tasks.load``); no
process holds the whole history. A forecaster is fitted in four steps: the workers' per-SKU
totals fit each stage's ``FeatureBuilder`` on the client (exactly as the whole history would);
the workers count and then build their training rows' features with that builder; LightGBM
trains on them where they are, through ``lightgbm.dask`` (data-parallel, the same parameters as
the local engine); the fitted trees come back into the same ``Forecaster`` class a local fit
makes, so the bundle is written once, in the same layout. Backtest folds and the cold-start
backtest forecast on the workers too; only their predictions (SKUs x horizon) are gathered.

Lost workers: every partition and matrix is a Dask future with its lineage, so Dask recomputes
what a dead worker held and retries its tasks. LightGBM's own training network cannot lose a
member: a worker lost while the trees are grown fails the run cleanly (nothing is written).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sqlalchemy import Engine

from featurestore.readers import SkuRange, read_products, sku_ranges
from training.backtest import (
    LOWER_IS_BETTER,
    SELECTION_METRICS,
    BacktestResult,
    fold_cutoffs,
    scored_backtest,
)
from training.cleaning import closed_store_days
from training.coldstart import cold_start_forecaster, cold_start_score, hidden_skus
from training.engine import dask_tasks as tasks
from training.engine.dask_tasks import Rows
from training.errors import TrainingError
from training.estimators import LGBMEstimator, make_estimator
from training.features import FeatureBuilder
from training.forecaster import YEARLY_MIN_DAYS, Forecaster, _Stage

if TYPE_CHECKING:
    from distributed import Client, Future

ProgressFn = Callable[[str], None]
# SKUs per partition at most: more partitions than workers balance the work and bound a task's
# memory (one partition's history and features); see docs/scale.md.
SKUS_PER_PARTITION = 5_000
# SKU ranges per worker at least, dealt out in turn: each worker then holds SKUs from across the
# catalogue's name order (departments, stores), not one end of it. lightgbm.dask builds each
# feature's bins from one worker's rows: from one end of the catalogue, a category or store that
# worker never saw had no bin of its own (m5_tiny: RMSSE +1.2% against the local engine with one
# range per worker; docs/benchmarks.md, Scale out).
PARTS_PER_WORKER = 8
# Minutes LightGBM's training network waits on a silent peer before giving up (a worker lost
# mid-fit would otherwise hold its peers for LightGBM's default of two hours).
NETWORK_TIMEOUT_MIN = 10


class WorkerLost(TrainingError):
    """A Dask worker left while LightGBM trained across the workers: the fit cannot finish."""


@dataclass(frozen=True)
class Window:
    """The history's extent, from the partitions' summaries."""

    first_date: pd.Timestamp  # first row of any SKU (known units or not)
    first_known: pd.Timestamp
    last_known: pd.Timestamp
    known_skus: int


def _window(summaries: Sequence[dict[str, Any]]) -> Window:
    known = [s for s in summaries if s["last_known"] is not None]
    if not known:
        raise TrainingError("the feature store has no sales history: ingest data first")
    return Window(
        first_date=min(s["first_date"] for s in known),
        first_known=min(s["first_known"] for s in known),
        last_known=max(s["last_known"] for s in known),
        known_skus=sum(s["known_skus"] for s in known),
    )


def label_groups(sums: Sequence[float]) -> list[list[int]]:
    """The designs (by index) each LightGBM part is made of: one part per design, except that a
    design whose targets sum to zero joins the part of the design with the largest sum.

    LightGBM's tweedie and poisson objectives stop on a machine whose own labels sum to zero,
    and lightgbm.dask trains each worker on the parts it holds: on a small catalogue (a SKU per
    partition) a worker could hold only SKUs that never sold. Joined, every part has sales.
    """
    if not sums:
        return []
    best = max(range(len(sums)), key=lambda i: sums[i])
    if sums[best] <= 0:
        raise TrainingError("no sales in the rows to train on: the targets are all zero")
    groups: list[list[int]] = []
    for i, total in enumerate(sums):
        if total > 0 and i != best:
            groups.append([i])
    groups.append([best, *(i for i, total in enumerate(sums) if total <= 0)])
    return groups


def _sklearn_params(est: LGBMEstimator) -> dict[str, Any]:
    """The estimator's lgb.train parameters for lightgbm.dask (its threads: each worker's own)."""
    params = est.lgb_params()
    params.pop("num_threads", None)
    params["n_estimators"] = est.n_estimators
    params.setdefault("time_out", NETWORK_TIMEOUT_MIN)
    return params


class DaskRunner:
    """The history up to a cut-off, partitioned by SKU range over a Dask cluster's workers."""

    def __init__(
        self,
        client: Client,
        parts: list[Future],
        ranges: list[SkuRange],
        products: pd.DataFrame,
        window: Window,
    ) -> None:
        self.client = client
        self.parts = parts
        self.ranges = ranges
        self.products = products
        self.extent = window
        self.fit_rows: dict[str, int] = {}  # model name -> rows its last fit trained on

    @classmethod
    def open(
        cls,
        client: Client,
        engine: Engine,
        url: str,
        cutoff: dt.date | None = None,
        *,
        partitions: int | None = None,
    ) -> DaskRunner:
        """Have the workers read the store's history up to ``cutoff``, one SKU range each.

        ``url`` is the store as the workers reach it (training.engine.cluster.worker_url).
        """
        from training.pipeline import check_cutoff

        check_cutoff(engine, cutoff)
        workers = list(client.ncores())
        if not workers:
            raise TrainingError("the Dask cluster has no workers")
        products = read_products(engine)
        n = partitions or max(
            PARTS_PER_WORKER * len(workers), math.ceil(len(products) / SKUS_PER_PARTITION)
        )
        ranges = sku_ranges(engine, n)
        if not ranges:
            raise TrainingError("the feature store has no products: ingest data first")
        # Partition i on worker i mod W first; Dask may move or recompute it if that one is lost.
        parts = [
            client.submit(
                tasks.load,
                url,
                r,
                cutoff,
                workers=[workers[i % len(workers)]],
                allow_other_workers=True,
            )
            for i, r in enumerate(ranges)
        ]
        summaries = client.gather([client.submit(tasks.summary, p) for p in parts])
        window = _window(summaries)
        return cls(client, parts, ranges, products, window)

    def close(self) -> None:
        """Let the workers drop the partitions."""
        self.client.cancel(self.parts)
        self.parts = []

    # -- HistoryRunner ------------------------------------------------------------------------

    def window(self) -> tuple[dt.date, dt.date, int]:
        """The first and last day with known units and the SKUs that have any."""
        w = self.extent
        return w.first_known.date(), w.last_known.date(), w.known_skus

    def backtest(
        self,
        candidates: Sequence[Forecaster],
        *,
        folds: int,
        horizon: int,
        step: int | None,
        metric: str,
        ensemble_top: int = 0,
        progress: ProgressFn | None = None,
    ) -> BacktestResult:
        """run_backtest's folds, fitted and forecast on the workers; scored here."""
        if metric not in LOWER_IS_BETTER:
            raise ValueError(
                f"cannot rank by {metric!r}; choose from {', '.join(SELECTION_METRICS)}"
            )
        w = self.extent
        cuts = fold_cutoffs(w.first_date, w.last_known, folds=folds, horizon=horizon, step=step)
        client = self.client
        stats = pd.concat(
            client.gather([client.submit(tasks.scale_stats, p, cuts[0]) for p in self.parts])
        )
        # As run_backtest: the days each partition's folds score, once for every fold and
        # candidate (closed store days read from the whole store's days are not scored).
        closed = self._closures(Rows())
        scored = [client.submit(tasks.scored_days, p, closed, cuts[0]) for p in self.parts]
        parts: list[pd.DataFrame] = []
        fit_seconds: dict[str, float] = {}
        for fold, cut in enumerate(cuts):
            for candidate in candidates:
                model = copy.deepcopy(candidate)
                if progress:
                    progress(f"fold {fold + 1}/{len(cuts)} (cut-off {cut.date()}): {model.name}")
                t0 = time.perf_counter()
                self._fit(model, Rows(cut=cut), progress=None)
                pred = self._map_model(tasks.fold_predictions, model, cut, horizon, per_part=scored)
                fit_seconds[candidate.name] = (
                    fit_seconds.get(candidate.name, 0.0) + time.perf_counter() - t0
                )
                frames = [f for f in pred if not f.empty]
                parts.append(
                    pd.concat(frames, ignore_index=True).assign(
                        model=candidate.name, fold=fold, cutoff=cut
                    )
                )
        return scored_backtest(
            parts,
            self.products,
            stats,
            cuts,
            horizon=horizon,
            metric=metric,
            ensemble_top=ensemble_top,
            fit_seconds=fit_seconds,
            baselines={c.name for c in candidates if c.is_baseline},
        )

    def fit(self, model: Forecaster, progress: ProgressFn | None = None) -> Forecaster:
        """The model fitted on the whole history, its trees grown across the workers."""
        return self._fit(model, Rows(), progress)

    def demand_classes(self) -> pd.Series:
        """SKU -> demand class, classified on the workers (each partition's own SKUs)."""
        client = self.client
        found = client.gather([client.submit(tasks.demand_classes, p) for p in self.parts])
        return pd.concat(found).astype(str)

    def fit_cold_start(self, horizon: int) -> Forecaster:
        """The attribute-only model (training.coldstart) fitted on every SKU's history."""
        return self._fit(cold_start_forecaster(horizon), Rows(), None)

    def backtest_cold_start(self, horizon: int, share: float, seed: int = 0) -> dict[str, Any]:
        """training.coldstart.backtest_cold_start, the hidden SKUs forecast on their workers."""
        client = self.client
        known = pd.concat(
            client.gather([client.submit(tasks.totals, p, Rows()) for p in self.parts])
        )
        last = self.extent.last_known
        cut = last - pd.Timedelta(days=horizon)
        hidden = hidden_skus(known.index.to_numpy(dtype=object), share, seed)
        if hidden is None:
            return {"skus": 0, "detail": "too few SKUs to hide some"}
        frozen = frozenset(hidden)
        model = self._fit(cold_start_forecaster(horizon), Rows(cut=cut, exclude=frozen), None)
        outs = [o for o in self._map_model(tasks.cold_predictions, model, frozen, cut, last) if o]
        merged = pd.concat([m for m, _ in outs], ignore_index=True)
        stats = pd.concat([s for _, s in outs])
        return cold_start_score(merged, stats, len(hidden), cut)

    # -- the fit --------------------------------------------------------------------------------

    def _map_model(
        self,
        fn: Callable[..., Any],
        model: Forecaster,
        *args: Any,
        per_part: Sequence[Any] | None = None,
    ) -> list[Any]:
        """fn(partition, model, *args[, per_part[i]]) on every partition, the fitted model sent
        once to each (``per_part``: one more argument per partition, e.g. futures on it)."""
        client = self.client
        [shared] = client.scatter([model], broadcast=True, hash=False)
        extra = [() if per_part is None else (per_part[i],) for i in range(len(self.parts))]
        try:
            return list(
                client.gather(
                    [
                        client.submit(fn, p, shared, *args, *more)
                        for p, more in zip(self.parts, extra, strict=True)
                    ]
                )
            )
        finally:
            client.cancel([shared])

    def _closures(self, rows: Rows) -> pd.MultiIndex:
        """The store closures of ``rows``, from the whole store's days summed over the
        partitions (training.cleaning.closed_store_days)."""
        client = self.client
        totals = client.gather([client.submit(tasks.store_totals, p, rows) for p in self.parts])
        return closed_store_days(pd.concat(totals))

    def _fit(self, model: Forecaster, rows: Rows, progress: ProgressFn | None) -> Forecaster:
        """Forecaster.fit over the partitions (its learned state set as its own fit sets it)."""
        client = self.client
        last = self.extent.last_known if rows.cut is None else min(rows.cut, self.extent.last_known)
        model.trained_until_ = last
        if model.is_baseline:
            model.stages_ = []
            return model
        family = model.family
        if not isinstance(family, LGBMEstimator):
            raise TrainingError(
                f"the dask engine trains LightGBM models and the baselines; {model.model} "
                "trains on one machine: use --engine local, or leave it out of --models"
            )
        t0 = time.perf_counter()
        per_sku = pd.concat(
            client.gather([client.submit(tasks.totals, p, rows) for p in self.parts])
        )
        # As Forecaster.fit: yearly features only when the catalogue's known days span two
        # years; stock-outs, zero runs and closures out of the targets (the store closures
        # from the whole store's days, summed over the partitions).
        model.yearly_ = (last - self.extent.first_known).days + 1 >= YEARLY_MIN_DAYS
        closed = self._closures(rows) if model.clean else None
        eligible = client.gather(
            [client.submit(tasks.eligible_rows, p, rows, model, last, closed) for p in self.parts]
        )
        counts = [n for n, _ in eligible]
        cleaning: dict[str, int] = {}
        for _, part_counts in eligible:
            for key, value in part_counts.items():
                cleaning[key] = cleaning.get(key, 0) + int(value)
        model.cleaning_ = cleaning
        total = int(sum(counts))
        if total == 0:
            raise TrainingError(f"{model.name}: no rows to train on")
        cap = model.max_train_rows
        keeps: list[int | None] = [None] * len(counts)
        if cap is not None and total > cap:
            # Each partition's share of the uniform sample the local engine draws.
            keeps = [round(c * cap / total) for c in counts]
        sizes = [c if k is None else k for c, k in zip(counts, keeps, strict=True)]
        features = time.perf_counter() - t0
        estimator = 0.0
        stages = []
        params = model._stage_params()
        for min_lag, first_h, last_h in model._stage_buckets():
            t1 = time.perf_counter()
            if progress:
                progress(f"{model.name}: features for lag floor {min_lag} on the workers")
            builder = FeatureBuilder(min_lag=min_lag, **(model.builder_params or {}))
            builder.fit_totals(per_sku, self.products)
            names = list(builder.features_order_)
            keep = np.array([model._keeps(n) for n in names])
            kept = [n for n, k in zip(names, keep, strict=True) if k]
            cols = np.flatnonzero(keep)
            designs = [
                (n, client.submit(tasks.design, p, rows, model, last, k, i, builder, cols, closed))
                for i, (p, k, n) in enumerate(zip(self.parts, keeps, sizes, strict=True))
                if n > 0
            ]
            est = make_estimator(model.model, **params)
            assert isinstance(est, LGBMEstimator)
            categorical = [c for c in builder.categorical_features_ if c in kept]
            if progress:
                progress(f"{model.name}: fitting {sum(sizes):,} rows x {len(kept)} features")
            t2 = time.perf_counter()
            fitted = self._train(est, designs, kept, categorical)
            t3 = time.perf_counter()
            est.adopt(fitted, feature_names=kept, categorical=categorical)
            del fitted
            stages.append(_Stage(min_lag, first_h, last_h, builder, est, cols, kept))
            features += t2 - t1
            estimator += t3 - t2
        model.stages_ = stages
        model.n_train_rows_ = sum(sizes)
        model.fit_seconds_ = {"features": features, "estimator": estimator}
        self.fit_rows[model.name] = sum(sizes)
        return model

    def _train(
        self,
        est: LGBMEstimator,
        designs: list[tuple[int, Future]],
        names: list[str],
        categorical: list[str],
    ) -> lgb.LGBMModel:
        """lightgbm.dask on the partitions' matrices where they lie (the fitted model); a lost
        worker fails it."""
        import dask.array as da
        from dask import delayed
        from lightgbm.dask import DaskLGBMRegressor

        client = self.client
        k = len(names)
        sums = client.gather([client.submit(tasks.label_sum, f) for _, f in designs])
        groups = label_groups(sums)
        X = da.concatenate(
            [
                da.from_delayed(
                    delayed(tasks.stacked)([designs[i][1] for i in g], matrix=True),
                    shape=(sum(designs[i][0] for i in g), k),
                    dtype=np.float32,
                )
                for g in groups
            ]
        )
        y = da.concatenate(
            [
                da.from_delayed(
                    delayed(tasks.stacked)([designs[i][1] for i in g], matrix=False),
                    shape=(sum(designs[i][0] for i in g),),
                    dtype=np.float32,
                )
                for g in groups
            ]
        )
        reg = DaskLGBMRegressor(client=client, **_sklearn_params(est))
        before = set(client.ncores())
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with warnings.catch_warnings():
                    # lightgbm.dask always says so: the sklearn wrapper's n_jobs is in its params.
                    warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored")
                    reg.fit(X, y, feature_name=names, categorical_feature=categorical)
                outcome["fitted"] = reg
            except BaseException as exc:  # reported to the waiting caller
                outcome["error"] = exc

        thread = threading.Thread(target=run, name="lightgbm-dask-fit", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
            alive = set(client.ncores())
            if thread.is_alive() and not before <= alive:
                # The survivors' LightGBM waits on the lost peer inside C++ (up to its time_out)
                # and holds their threads: restarting them frees the cluster now. What they held
                # is recomputed from its lineage if it is asked for again.
                client.restart_workers(sorted(before & alive), raise_for_error=False)
                raise WorkerLost(
                    "a Dask worker was lost while LightGBM trained across the workers; "
                    "nothing was written: run the command again"
                )
        if "error" in outcome:
            raise TrainingError(f"LightGBM on Dask failed: {outcome['error']}") from outcome[
                "error"
            ]
        fitted: lgb.LGBMModel = outcome["fitted"]
        return fitted
