"""Multi-horizon forecasters: a fitted feature builder and estimator per lag floor, or a baseline.

Strategies: ``direct`` (one model, lag floor = horizon), ``recursive`` (a one-step model fed its
own forecasts) and ``multi`` (M5-style buckets: with 14, floor 14 answers days 1-14 and floor 28
days 15-28; or explicit lag floors, e.g. ``SHORT_FLOORS`` (1, 14, 28) to read yesterday for day
1). The default was picked by backtest (docs/benchmarks.md, Training). Forecasts are
made by ``training.predict``.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import pandas as pd

from featurestore.schema import HISTORY_COLUMNS
from training.cleaning import clean_targets, grouped_starts
from training.estimators import (
    BASELINES,
    Estimator,
    FeatureBlocks,
    LGBMEstimator,
    Link,
    cpu_threads,
    family,
    make_estimator,
)
from training.feature_groups import feature_group
from training.feature_inputs import check_columns, prepare
from training.features import FeatureBuilder, sku_totals, transform_stages
from training.predict import predict_frame

Strategy = Literal["direct", "recursive", "multi"]
ProgressFn = Callable[[str], None]


class _SharedBlocks:
    """A model's stages' training blocks built together: each chunk of SKUs is put on the day
    grid once for every stage (``transform_stages``: window sums, extremes and EWMs computed
    once), and the other stages' matrices of a block are kept until their stage asks for them
    (each block is asked for once).

    ``lockstep``: the stages are binned at the same time, one thread each, so no stage builds
    the next block while another's matrix of this one still waits: one block per other stage is
    kept (~0.1 GB), not a whole stage's training matrix (~0.5 GB at the 2M-row sample)."""

    def __init__(
        self,
        products: pd.DataFrame,
        stages: list[tuple[FeatureBuilder, np.ndarray | None]],
        *,
        lockstep: bool = False,
    ) -> None:
        self.products = products
        self.builders = [b for b, _ in stages]
        self.cols = [c for _, c in stages]
        self.unused = [_unused(b, c) for b, c in stages]
        self.kept: dict[tuple[int, Any], np.ndarray] = {}
        self.lockstep = lockstep
        self.building: set[Any] = set()
        self.changed = threading.Condition()
        self.failed: BaseException | None = None
        self.most_kept = 0  # the most matrices kept at once (tests)

    def build(
        self,
        stage: int,
        clock: dict[str, float],
        key: Any,
        frame: pd.DataFrame,
        rows: np.ndarray,
    ) -> np.ndarray:
        """Stage ``stage``'s matrix of the block ``key`` (its rows of ``frame``)."""
        with self.changed:
            while True:
                if self.failed is not None:
                    raise RuntimeError("another stage failed while binning") from self.failed
                mine = self.kept.pop((stage, key), None)
                if mine is not None:
                    self.changed.notify_all()
                    return mine
                # Another stage builds this block, or (lockstep) has not taken its matrix of
                # the last one yet: wait for it.
                if key in self.building or (self.lockstep and self.kept):
                    self.changed.wait()
                    continue
                self.building.add(key)
                break
        try:
            t0 = time.perf_counter()
            prepared = prepare(frame, self.products)
            matrices = transform_stages(
                self.builders, [rows] * len(self.builders), prepared, unused=self.unused
            )
            del prepared
            others = {}
            for j, fm in enumerate(matrices):
                X = fm.X if self.cols[j] is None else fm.X[:, self.cols[j]]
                if j == stage:
                    mine = X
                else:
                    others[(j, key)] = X
            del matrices
            clock["features"] += time.perf_counter() - t0
        except BaseException as exc:
            self.abort(exc)
            raise
        with self.changed:
            self.building.discard(key)
            self.kept.update(others)
            self.most_kept = max(self.most_kept, len(self.kept))
            self.changed.notify_all()
        assert mine is not None
        return mine

    def abort(self, exc: BaseException) -> None:
        """A stage failed: the others stop waiting for it."""
        with self.changed:
            if self.failed is None:
                self.failed = exc
            self.changed.notify_all()


def _unused(builder: FeatureBuilder, cols: np.ndarray | None) -> frozenset[str]:
    """The builder's features outside the estimator's columns (None: it reads them all)."""
    if cols is None:
        return frozenset()
    names = builder.features_order_
    return frozenset(names) - {names[i] for i in cols}


def capped_targets(builder: FeatureBuilder, sku: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Targets capped at their SKU's bulk-order cap (the builder's, learned at fit): what every
    engine trains on (the Dask engine's workers too, training.engine.dask_tasks.design)."""
    caps = builder.unit_caps_
    if not caps:
        return y
    cap = pd.Series(caps, dtype=np.float64).reindex(pd.Index(sku)).to_numpy()
    return np.minimum(y, np.nan_to_num(cap, nan=np.inf)).astype(y.dtype, copy=False)


class NotFittedForecaster(RuntimeError):
    """Predict was called before fit."""


@dataclass
class _Stage:
    """One lag floor: the horizons it answers, its fitted builder and estimator."""

    min_lag: int
    first_h: int
    last_h: int
    builder: FeatureBuilder
    estimator: Estimator
    keep: np.ndarray  # columns of the builder's matrix the estimator sees
    names: list[str]

    @property
    def unused(self) -> frozenset[str]:
        """The builder's features the estimator does not read."""
        return _unused(self.builder, self.keep)

    def features(self, frame: pd.DataFrame, products: pd.DataFrame, rows: Any) -> np.ndarray:
        """The estimator's input for the chosen rows."""
        X = self.builder.transform(frame, products, rows=rows, unused=self.unused).X
        return X[:, self.keep]


@dataclass
class _Design:
    """One stage's fitted builder, the columns kept and its training data, before the fit."""

    bucket: tuple[int, int, int]  # (min_lag, first horizon, last horizon)
    builder: FeatureBuilder
    cols: np.ndarray
    kept: list[str]
    X: np.ndarray | FeatureBlocks | None
    y: np.ndarray | None
    clock: dict[str, float]  # seconds building features

    @property
    def categorical(self) -> list[str]:
        return [c for c in self.builder.categorical_features_ if c in self.kept]

    def stage(self, estimator: Estimator) -> _Stage:
        min_lag, first_h, last_h = self.bucket
        return _Stage(min_lag, first_h, last_h, self.builder, estimator, self.cols, self.kept)


def _buckets(
    strategy: Strategy, horizon: int, bucket: int, floors: Sequence[int] | None = None
) -> list[tuple[int, int, int]]:
    """(min_lag, first horizon, last horizon) per stage.

    ``floors`` (multi only) gives the lag floors themselves: floor f answers the days after the
    previous floor up to f, so (1, 7, 14, 28) forecasts day 1 from yesterday's units, days 2-7
    from a week back, and so on; the last floor reaches at least the horizon.
    """
    if strategy == "direct":
        return [(horizon, 1, horizon)]
    if strategy == "recursive":
        return [(1, 1, horizon)]
    if floors is not None:
        kept = [*sorted({int(f) for f in floors if 1 <= int(f) < horizon}), horizon]
        out, first = [], 1
        for f in kept:
            out.append((f, first, f))
            first = f + 1
        return out
    stages = []
    for first in range(1, horizon + 1, bucket):
        last = min(first + bucket - 1, horizon)
        stages.append((last, first, last))
    return stages


def _training_rows(
    history: pd.DataFrame,
    min_rows_per_sku: int,
    max_train_days: int | None,
    max_train_rows: int | None = None,
    censored: np.ndarray | None = None,
    *,
    bounds: np.ndarray | None = None,
    seed: int | None = None,
) -> Any:
    """Boolean mask of rows worth training on: known units, not censored, past each SKU's first
    days, within the last ``max_train_days``; above ``max_train_rows`` such rows, a uniform
    sample of them (seeded by the history's size, so the same history trains on the same rows).

    ``bounds`` (``_sku_starts``: each SKU's rows together) saves grouping the SKU column;
    ``seed`` replaces the history's size (a fit on a view of a longer frame seeds with the rows
    it may read, as it would on a copy of them)."""
    known = history["units"].notna().to_numpy()
    if bounds is not None:
        # Rows are grouped by SKU: the first min_rows_per_sku rows of each run are too young
        # (marked by position, without a row-sized age array).
        k = np.minimum(np.diff(bounds), min_rows_per_sku)
        young = np.zeros(len(history), dtype=bool)
        young[np.repeat(bounds[:-1] - np.cumsum(k) + k, k) + np.arange(k.sum())] = True
        mask = known & ~young
        del young
    else:
        age = history.groupby("sku", sort=False).cumcount().to_numpy()
        mask = known & (age >= min_rows_per_sku)
        del age
    if censored is not None:
        mask &= ~censored
    if max_train_days is not None:
        last = last_day(history, known)
        mask &= (history["date"] > last - pd.Timedelta(days=max_train_days)).to_numpy()
    if max_train_rows is not None:
        rows = np.flatnonzero(mask)
        if len(rows) > max_train_rows:
            rng = np.random.default_rng(len(history) if seed is None else seed)
            keep = rng.choice(rows, size=max_train_rows, replace=False)
            mask = np.zeros(len(mask), dtype=bool)
            mask[keep] = True
    return mask


def last_day(history: pd.DataFrame, rows: np.ndarray) -> pd.Timestamp:
    """The latest date of the chosen rows (bool per row; NaT when none), without copying them
    (a boolean take of the date column costs a second at M5 scale, and fits ask often)."""
    return _extreme_day(history, rows, latest=True)


def first_day(history: pd.DataFrame, rows: np.ndarray) -> pd.Timestamp:
    """The earliest date of the chosen rows (NaT when none), as ``last_day``."""
    return _extreme_day(history, rows, latest=False)


def _extreme_day(history: pd.DataFrame, rows: np.ndarray, *, latest: bool) -> pd.Timestamp:
    dates = history["date"].to_numpy()
    if not rows.any():
        return pd.Timestamp("NaT")
    ticks = dates.view(np.int64)
    bound = np.iinfo(np.int64)
    found = (
        ticks.max(where=rows, initial=bound.min)
        if latest
        else ticks.min(where=rows, initial=bound.max)
    )
    day: np.datetime64 = np.array([found], dtype=np.int64).view(dates.dtype)[0]
    return pd.Timestamp(day)


def _sku_starts(history: pd.DataFrame) -> np.ndarray | None:
    """First row of each SKU's run plus the end, or None if a SKU's rows are not contiguous."""
    sku = history["sku"].to_numpy()
    starts = grouped_starts(sku) if len(sku) else None
    return None if starts is None else np.concatenate([starts, [len(sku)]])


def _blocks(
    bounds: np.ndarray,
    mask: np.ndarray,
    block_rows: int,
    sample_rows: int,
    seed: int,
    listed: np.ndarray | None = None,
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Row ranges of whole SKUs holding about ``block_rows`` training rows each, and the row
    positions of a random subset of SKUs holding at least ``sample_rows`` of them.

    ``listed`` (bool per SKU): the SKUs the sample is drawn from (default: all), so a fit on a
    view draws from the SKUs a copy of its rows would hold."""
    # Counted as int8 into int64 sums: no int64 copy of the row mask.
    per_sku = (
        np.add.reduceat(mask.view(np.int8), bounds[:-1], dtype=np.int64)
        if len(mask)
        else np.array([])
    )
    cum = np.cumsum(per_sku)
    ranges, first, done = [], 0, 0
    for i in range(len(per_sku)):
        if cum[i] - done >= block_rows or i == len(per_sku) - 1:
            ranges.append((int(bounds[first]), int(bounds[i + 1])))
            first, done = i + 1, int(cum[i])
    skus = np.arange(len(per_sku)) if listed is None else np.flatnonzero(listed)
    order = skus[np.random.default_rng(seed).permutation(len(skus))]
    take = order[: int(np.searchsorted(np.cumsum(per_sku[order]), sample_rows)) + 1]
    take.sort()
    positions = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in take])
    return ranges, positions


# The default forecaster, chosen by the m5_tiny backtests (docs/benchmarks.md, Training).
DEFAULT_STRATEGY: Strategy = "multi"
DEFAULT_BUCKET = 14  # multi without floors: lag floors 14 and 28
# multi: the default lag floors of the stages (None: buckets of DEFAULT_BUCKET days). A short
# stage (floors=(1, 14, 28): day 1 from yesterday's units) lets yesterday's spike or stock-out
# move the first day; it lost on the m5_tiny and olist hold-outs (docs/benchmarks.md, Accuracy
# on order-line data: features), so it is an option, not the default.
SHORT_FLOORS: tuple[int, ...] = (1, 14, 28)
DEFAULT_FLOORS: tuple[int, ...] | None = None
# Yearly features (week of year, month, lag 364) need this many days of known history: every
# calendar period seen at least twice (a single year's Christmas closure is not a season).
YEARLY_MIN_DAYS = 2 * 365
YEARLY_FEATURES = ("week", "month", "lag_364")
DEFAULT_BUILDER_PARAMS: dict[str, Any] = {
    "windows": (7, 28, 91),
    "zero_windows": (28,),
    "price_windows": (28,),
}
DEFAULT_DROP_FEATURES: tuple[str, ...] = ()
DEFAULT_MAX_TRAIN_DAYS: int | None = 1095
# Above this many training rows a uniform sample of this size is trained on: each boosting round
# costs in proportion to the rows and a global model learns little more from each extra one.
DEFAULT_MAX_TRAIN_ROWS: int | None = 2_000_000
STRATEGY_NOTE = (
    "multi-horizon strategy chosen by backtest on m5_tiny (docs/benchmarks.md, Training): "
    "direct (1 stage), multi with lag floors 14/28 (2 stages) and 7/14/21/28 (4 stages), "
    "recursive; multi 14/28 with the tree budget shared between its stages was as accurate as "
    "4 stages at the cost of one direct model; serving builds features and predicts once per stage"
)


class Forecaster:
    """A global model forecasting every SKU ``horizon`` days ahead from an origin.

    ``tree_budget="total"`` shares a LightGBM model's ``n_estimators`` between the stages (each
    gets n_estimators / stages trees at learning_rate x stages), so every strategy fits the same
    number of trees; ``"per_stage"`` gives each stage the full count.
    """

    def __init__(
        self,
        *,
        model: str = "lgbm_tweedie",
        strategy: Strategy = DEFAULT_STRATEGY,
        horizon: int = 28,
        bucket: int = DEFAULT_BUCKET,
        floors: Sequence[int] | None = DEFAULT_FLOORS,
        builder_params: dict[str, Any] | None = None,
        model_params: dict[str, Any] | None = None,
        min_rows_per_sku: int = 28,
        max_train_days: int | None = DEFAULT_MAX_TRAIN_DAYS,
        max_train_rows: int | None = DEFAULT_MAX_TRAIN_ROWS,
        drop_groups: Sequence[str] = (),
        drop_features: Sequence[str] | None = None,
        tree_budget: Literal["total", "per_stage"] = "total",
        block_rows: int = 500_000,
        bin_sample_rows: int = 200_000,
        parallel_stages: bool = True,
        clean: bool = True,
    ) -> None:
        self.model = model
        self.strategy = strategy
        self.horizon = horizon
        self.bucket = bucket
        self.floors = None if floors is None else tuple(int(f) for f in floors)
        self.builder_params = (
            dict(DEFAULT_BUILDER_PARAMS) if builder_params is None else builder_params
        )
        self.model_params = model_params
        self.min_rows_per_sku = min_rows_per_sku
        self.max_train_days = max_train_days
        self.max_train_rows = max_train_rows
        self.drop_groups = tuple(drop_groups)
        self.drop_features = tuple(
            DEFAULT_DROP_FEATURES if drop_features is None else drop_features
        )
        self.tree_budget = tree_budget
        # Above block_rows training rows, features are built per block of SKUs and binned by
        # LightGBM block by block (bin boundaries from a sample of bin_sample_rows rows).
        self.block_rows = block_rows
        self.bin_sample_rows = bin_sample_rows
        # LightGBM stages train side by side, the threads shared between them (see fit).
        self.parallel_stages = parallel_stages
        # Censor stock-outs and closures from the targets and cap bulk orders (training.cleaning).
        self.clean = clean

    @property
    def name(self) -> str:
        """Model and strategy, as reports and manifests show it."""
        if self.is_baseline:
            return self.model
        return f"{self.model}/{self.strategy}"

    @property
    def is_baseline(self) -> bool:
        """A feature-free baseline (no stages, no estimator)."""
        return self.model in BASELINES

    @property
    def family(self) -> Estimator | None:
        """An unfitted estimator of the model's family (what describes it); None: a baseline."""
        return family(self.model)

    @property
    def link(self) -> Link:
        """The estimator's link (identity for baselines)."""
        est = self.family
        return "identity" if est is None else est.link

    @property
    def gives_contributions(self) -> bool:
        """Whether its forecasts can be explained by per-feature contributions."""
        est = self.family
        return est is not None and est.gives_contributions

    def fit(
        self,
        history: pd.DataFrame,
        products: pd.DataFrame,
        progress: ProgressFn | None = None,
        *,
        visible: np.ndarray | None = None,
    ) -> Forecaster:
        """Fit one builder and estimator per stage on the history's known units.

        ``visible`` (bool per row, rows in date order within a SKU): the only rows the fit may
        read, e.g. a backtest fold's rows up to its cut-off. The fit is the one on
        ``history[visible]``; when each SKU's rows come together (as readers give them) it is
        made without copying the frame: the other rows' units are hidden and every other column
        is read on visible rows only (tests/training: the leakage tests).
        """
        self.stages_: list[_Stage] = []
        seed_rows = None
        if visible is not None:
            visible = np.asarray(visible, dtype=bool)
            if self.is_baseline:  # it reads nothing but the last day with known units
                known = visible & history["units"].notna().to_numpy()
                self.trained_until_ = last_day(history, known)
                return self
            if _sku_starts(history) is None:
                # The view needs each SKU's rows together (readers give them so): else a copy.
                return self.fit(history[visible].reset_index(drop=True), products, progress)
            seed_rows = int(visible.sum())
            units = history["units"].to_numpy(copy=True)
            units[~visible] = np.nan
            history = history.assign(units=units)  # copy-on-write: only units is new
            del units
        self.trained_until_ = last_day(history, history["units"].notna().to_numpy())
        if self.is_baseline:
            return self
        bounds = _sku_starts(history)
        if bounds is None:  # the builder wants each SKU's rows together; readers give them so
            history = history.sort_values(["sku", "date"], kind="stable", ignore_index=True)
            bounds = _sku_starts(history)
        assert bounds is not None
        known_units = history["units"].notna().to_numpy()
        # The known days' span without a boolean take of the dates (0.4 GB at M5 scale).
        first, last = first_day(history, known_units), last_day(history, known_units)
        span = (last - first).days + 1 if known_units.any() else 0
        del known_units
        # Catalogue-wide: one frozen feature list per stage, and the catalogue's span is what
        # the trees split on (a per-SKU rule would leave the columns to SKUs that have them).
        self.yearly_ = span >= YEARLY_MIN_DAYS
        cleaning = clean_targets(history, products) if self.clean else None
        self.cleaning_ = {} if cleaning is None else cleaning.summary()
        if seed_rows is not None and "rows" in self.cleaning_:
            self.cleaning_["rows"] = seed_rows
        mask = _training_rows(
            history,
            self.min_rows_per_sku,
            self.max_train_days,
            self.max_train_rows,
            None if cleaning is None else cleaning.censored,
            bounds=bounds,
            seed=seed_rows,
        )
        # Per-SKU totals once for every stage's builder (FeatureBuilder.fit_totals), with the
        # cleaning's caps (the same unit_caps of the same known rows).
        check_columns(history, tuple(HISTORY_COLUMNS), "history")
        totals = sku_totals(history, None if cleaning is None else cleaning.caps)
        del cleaning
        n_rows = int(mask.sum())
        self.n_train_rows_ = n_rows
        # The SKUs a copy of the visible rows would hold (the bin sample is drawn among them).
        listed = None if visible is None else np.logical_or.reduceat(visible, bounds[:-1])
        draw = (len(history) if seed_rows is None else seed_rows, listed)
        buckets = self._stage_buckets()
        # Side by side in blocks too: only each stage's binned dataset (a byte a value) and its
        # training state are held at once (~0.2 GB a stage at the 2M-row sample), while the
        # next stage's features are built on the core a single training thread leaves free.
        workers, stage_threads = self._stage_workers(len(buckets))
        shared = None
        if n_rows > self.block_rows and bounds is not None:
            made = [self._builder(b[0], totals, products) for b in buckets]
            shared = _SharedBlocks(
                products,
                [(b, None if k.all() else np.flatnonzero(k)) for b, k in made],
                lockstep=1 < workers == len(buckets),
            )
        design = partial(
            self._design, history, totals, products, mask, bounds, n_rows, draw, shared, buckets
        )
        if shared is not None and shared.lockstep:
            # Every stage on a thread of its own: binned together, block by block (each
            # block's features built once for all), then trained side by side.
            designs = [design(b, progress) for b in buckets]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                jobs = [pool.submit(self._bin_and_train, d, stage_threads, shared) for d in designs]
                fitted = [job.result() for job in jobs]
        elif workers > 1:
            # LightGBM releases the GIL while it trains: stages on one thread each side by side
            # beat each stage on every thread in turn (its OpenMP regions synchronise per leaf at
            # this size). Features are built here, in turn, while the previous stage trains.
            # Each stage's data is binned here too, so only its binned copy outlives it.
            with ThreadPoolExecutor(max_workers=workers) as pool:
                binned = (self._binned(design(b, progress), stage_threads) for b in buckets)
                jobs = [pool.submit(job) for job in binned]
                fitted = [job.result() for job in jobs]
        else:
            fitted = [self._train(design(b, progress)) for b in buckets]
        # Seconds building features and in the rest of the estimators' fit, summed over stages
        # (stages fitted side by side overlap in wall time).
        self.fit_seconds_ = {
            "features": sum(f for _, f, _ in fitted),
            "estimator": sum(e for _, _, e in fitted),
        }
        self.stages_ = [stage for stage, _, _ in fitted]
        return self

    def _stage_workers(self, n_stages: int) -> tuple[int, int | None]:
        """Stages fitted at once and the training threads of each (None: the model's own)."""
        est = self.family
        if not self.parallel_stages or n_stages < 2 or est is None or not est.trains_side_by_side:
            return 1, None
        threads = (self.model_params or {}).get("num_threads")
        total = cpu_threads(threads)
        workers = min(n_stages, total)
        if workers < 2:
            return 1, None
        return workers, max(1, total // workers)

    def _design(
        self,
        history: pd.DataFrame,
        totals: pd.DataFrame,
        products: pd.DataFrame,
        mask: np.ndarray,
        bounds: np.ndarray | None,
        n_rows: int,
        draw: tuple[int, np.ndarray | None],
        shared: _SharedBlocks | None,
        buckets: list[tuple[int, int, int]],
        bucket: tuple[int, int, int],
        progress: ProgressFn | None,
    ) -> _Design:
        """One stage's fitted builder and training matrix (or its blocks) and targets
        (``draw``: the bin sample's seed and the SKUs it is drawn from, see ``_blocks``;
        ``shared``: the stages' blocks built together, above ``block_rows``)."""
        min_lag = bucket[0]
        clock = {"features": 0.0}
        t0 = time.perf_counter()
        if progress:
            progress(f"{self.name}: features for lag floor {min_lag}")
        stage = buckets.index(bucket)
        if shared is not None:
            builder = shared.builders[stage]
            keep = np.array([self._keeps(n) for n in builder.features_order_])
        else:
            builder, keep = self._builder(min_lag, totals, products)
        names = list(builder.features_order_)
        kept = [n for n, k in zip(names, keep, strict=True) if k]
        cols = np.flatnonzero(keep)
        X: np.ndarray | FeatureBlocks
        if shared is not None and bounds is not None:
            # Built block by block while LightGBM bins them: their seconds land in the clock.
            clock["features"] += time.perf_counter() - t0
            build = partial(shared.build, stage, clock)
            X, y = self._feature_blocks(history, mask, bounds, build, len(kept), builder, draw)
        else:
            fm = builder.transform(history, products, rows=mask, unused=_unused(builder, cols))
            X, y = (fm.X if keep.all() else fm.X[:, cols]), capped_targets(builder, fm.sku, fm.y)
            del fm
            clock["features"] += time.perf_counter() - t0
        if progress:
            progress(f"{self.name}: fitting {n_rows:,} rows x {len(kept)} features")
        return _Design(bucket, builder, cols, kept, X, y, clock)

    def _builder(
        self, min_lag: int, totals: pd.DataFrame, products: pd.DataFrame
    ) -> tuple[FeatureBuilder, np.ndarray]:
        """A stage's fitted builder and which of its features the estimator keeps."""
        builder = FeatureBuilder(min_lag=min_lag, **(self.builder_params or {}))
        builder.fit_totals(totals, products)  # = builder.fit(history, products)
        keep = np.array([self._keeps(n) for n in builder.features_order_])
        return builder, keep

    def _bin_and_train(
        self, design: _Design, stage_threads: int | None, shared: _SharedBlocks
    ) -> tuple[_Stage, float, float]:
        """A stage binned (its blocks shared with the others in lockstep) and trained."""
        try:
            fit = self._binned(design, stage_threads)
        except BaseException as exc:
            shared.abort(exc)
            raise
        return fit()

    def _binned(
        self, design: _Design, stage_threads: int | None
    ) -> Callable[[], tuple[_Stage, float, float]]:
        """Bin a LightGBM stage's design now; the call returned trains it (see _train)."""
        t0 = time.perf_counter()
        params = self._stage_params()
        if stage_threads is not None:
            params["train_threads"] = stage_threads
        estimator = make_estimator(self.model, **params)
        if not isinstance(estimator, LGBMEstimator):
            raise TypeError(f"{self.model} does not train from a binned dataset")
        assert design.X is not None and design.y is not None
        f0 = design.clock["features"]
        train = estimator.fit_later(
            design.X, design.y, feature_names=design.kept, categorical=design.categorical
        )
        design.X = design.y = None  # LightGBM's binned copy is the only one left
        binning = time.perf_counter() - t0 - (design.clock["features"] - f0)

        def fit() -> tuple[_Stage, float, float]:
            t1 = time.perf_counter()
            train()
            spent = binning + time.perf_counter() - t1
            return design.stage(estimator), design.clock["features"], spent

        return fit

    def _train(self, design: _Design) -> tuple[_Stage, float, float]:
        """One stage's estimator fitted on its design, with its feature and estimator seconds."""
        t0 = time.perf_counter()
        f0 = design.clock["features"]
        estimator = make_estimator(self.model, **self._stage_params())
        X, y = design.X, design.y
        design.X = design.y = None  # the estimator's dataset is the only copy left
        assert X is not None and y is not None
        estimator.fit(X, y, feature_names=design.kept, categorical=design.categorical)
        del X, y
        # Blocks' features are built during the fit: they count as features, not estimator.
        built = design.clock["features"] - f0
        spent = time.perf_counter() - t0 - built
        return design.stage(estimator), design.clock["features"], spent

    def _stage_params(self) -> dict[str, Any]:
        """The estimator parameters of one stage (the tree budget shared when asked)."""
        params = dict(self.model_params or {})
        stages = len(self._stage_buckets())
        if self.tree_budget == "total" and stages > 1:
            est = make_estimator(self.model, **params)
            if est.shares_tree_budget:
                params.update(est.budget_params(stages))
        return params

    def _stage_buckets(self) -> list[tuple[int, int, int]]:
        """The stages: the lag ``floors`` if given, else buckets of ``bucket`` days."""
        return _buckets(self.strategy, self.horizon, self.bucket, self.floors)

    def _keeps(self, name: str) -> bool:
        if not getattr(self, "yearly_", True) and name in YEARLY_FEATURES:
            return False
        return feature_group(name) not in self.drop_groups and name not in self.drop_features

    def _feature_blocks(
        self,
        history: pd.DataFrame,
        mask: np.ndarray,
        bounds: np.ndarray,
        build: Callable[[Any, pd.DataFrame, np.ndarray], np.ndarray],
        n_features: int,
        builder: FeatureBuilder,
        draw: tuple[int, np.ndarray | None],
    ) -> tuple[FeatureBlocks, np.ndarray]:
        """The training matrix as blocks of whole SKUs, with its targets and a bin sample."""
        ranges, sample_pos = _blocks(
            bounds,
            mask,
            self.block_rows,
            self.bin_sample_rows,
            seed=draw[0],
            listed=draw[1],
        )

        def block(a: int, b: int) -> np.ndarray:
            return build((a, b), history.iloc[a:b], mask[a:b])

        sample = build("sample", history.iloc[sample_pos], mask[sample_pos])
        blocks = [(int(mask[a:b].sum()), partial(block, a, b)) for a, b in ranges]
        y = capped_targets(
            builder,
            history["sku"].to_numpy(dtype=object)[mask],
            history["units"].to_numpy(dtype=np.float32)[mask],
        )
        return FeatureBlocks(n_features, [bl for bl in blocks if bl[0] > 0], sample), y

    def _check_fitted(self) -> None:
        if not hasattr(self, "stages_"):
            raise NotFittedForecaster(f"{self.name} is not fitted")

    @property
    def required_history(self) -> int:
        """Days of history before the origin that a forecast needs."""
        self._check_fitted()
        if not self.stages_:
            return 28
        return max(s.builder.required_history for s in self.stages_) + self.horizon

    @property
    def feature_names_(self) -> list[str]:
        """Feature order of the first stage (every stage's list is in ``stage_features``)."""
        self._check_fitted()
        return list(self.stages_[0].names) if self.stages_ else []

    def stage_features(self) -> dict[int, list[str]]:
        """Feature order per lag floor."""
        self._check_fitted()
        return {s.min_lag: list(s.names) for s in self.stages_}

    def predict(
        self,
        frame: pd.DataFrame,
        products: pd.DataFrame,
        origin: dt.date | pd.Timestamp,
        horizon: int | None = None,
        *,
        with_features: bool = False,
    ) -> pd.DataFrame:
        """Forecast days origin+1 .. origin+horizon for every SKU of ``frame``.

        ``frame`` is the canonical history frame (units known up to ``origin``) extended with the
        horizon's rows, whose covariates (planned prices, promotions, calendar) are known.
        Returns sku, date, horizon, mean (and the stage and feature rows when asked for).
        """
        self._check_fitted()
        horizon = self.horizon if horizon is None else horizon
        if horizon > self.horizon:
            raise ValueError(f"horizon {horizon} exceeds the model's {self.horizon}")
        return predict_frame(
            self, frame, products, pd.Timestamp(origin), horizon, with_stage=with_features
        )

    def contributions(
        self, frame: pd.DataFrame, products: pd.DataFrame, origin: dt.date | pd.Timestamp
    ) -> list[tuple[pd.DataFrame, np.ndarray, list[str]]]:
        """Per stage: the horizon rows, their per-feature contributions (raw score) and names.

        For the recursive strategy the horizon's units are first filled with the forecasts, as
        predict does, so every day is explained with the inputs it was forecast from.
        """
        self._check_fitted()
        origin = pd.Timestamp(origin)
        frame = frame.reset_index(drop=True)
        day = ((frame["date"] - origin).dt.days).to_numpy()
        if self.strategy == "recursive":
            pred = self.predict(frame, products, origin)
            filled = frame.set_index(["sku", "date"])["units"].copy()
            filled.loc[pd.MultiIndex.from_frame(pred[["sku", "date"]])] = pred["mean"].to_numpy()
            frame = frame.assign(units=filled.to_numpy(dtype=np.float32))
        parts = []
        for stage in self.stages_:
            rows = (day >= stage.first_h) & (day <= stage.last_h)
            if not rows.any():
                continue
            contrib = stage.estimator.contributions(stage.features(frame, products, rows))
            if contrib is None:
                raise ValueError(f"{self.model} does not explain its forecasts")
            parts.append((frame.loc[rows, ["sku", "date"]], contrib, list(stage.names)))
        return parts


def forecasters_for(
    models: Sequence[str], strategy: Strategy, horizon: int, **kwargs: Any
) -> list[Forecaster]:
    """One unfitted forecaster per model name (baselines ignore the strategy)."""
    return [Forecaster(model=m, strategy=strategy, horizon=horizon, **kwargs) for m in models]
