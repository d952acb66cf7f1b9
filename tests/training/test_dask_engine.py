"""The Dask engine (training.engine): the same results as one machine, from SKU partitions.

One LocalCluster of two worker processes (one thread each) serves the whole module; each backend
gets a small synthetic store of its own. The killed-worker tests kill a worker process for real.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine

from app.services.inventory import run_inventory_plan
from featurestore.db import make_engine
from featurestore.inventory_plans import latest_plan
from featurestore.readers import SkuRange, read_frame, read_range, sku_ranges
from tests.conftest import own_store
from tests.training.frames import with_closure_and_stock_out
from training.bundle import load_bundle
from training.cleaning import clean_targets
from training.engine.dask_batch import DaskForecastAll
from training.engine.dask_runner import DaskRunner
from training.engine.runner import LocalRunner
from training.options import TrainOptions
from training.pipeline import backtest_on, load_history, train
from training.predict import forecast_all
from training.registry import Registry
from training.selection import Selection, choose, is_baseline, sku_fallback
from training.synth import SynthConfig, generate, write_catalogue

distributed = pytest.importorskip("distributed")

# Small and quick: one direct stage of 20 trees, one fold.
OPTIONS = dict(
    models=["seasonal_naive", "lgbm_tweedie"],
    strategy="direct",
    horizon=7,
    folds=1,
    model_params={"lgbm_tweedie": {"n_estimators": 20}},
    cold_start_share=0.2,
)


def options(**changes: Any) -> TrainOptions:
    return TrainOptions(**{**OPTIONS, **changes})  # type: ignore[arg-type]


@dataclass
class Store:
    url: str
    engine: Engine


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """Two worker processes of one thread each, as on the 2-core CI machine."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    # A fixed calendar (the default ends yesterday): this one has bulk orders that are capped,
    # which the one-worker equality checks the Dask engine's targets against.
    end = dt.date(2026, 12, 6)
    catalogue = generate(SynthConfig(n_skus=12, n_days=200, seed=5, end=end))
    with own_store(request, tmp_path_factory.mktemp("dask")) as url:
        engine = make_engine(url)
        write_catalogue(engine, catalogue)
        yield Store(url, engine)
        engine.dispose()


@dataclass
class Champion:
    registry: Registry
    version: str


@pytest.fixture(scope="module")
def champion(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """A locally trained, promoted bundle of the store (forecast-all and the plan use it)."""
    models = tmp_path_factory.mktemp("champion")
    outcome = train(store.engine, models, options())
    registry = Registry(models)
    registry.promote(outcome.version, reason="test")
    return Champion(registry, outcome.version)


def _no_whole_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any read of every SKU's history in this (the client's) process fail the test."""
    import featurestore.readers as readers
    import training.pipeline as pipeline

    real = readers.read_frame

    def guarded(engine: Engine, *, skus: Any = None, **kw: Any) -> pd.DataFrame:
        if skus is None:
            raise AssertionError("the whole history was read in the client's process")
        return real(engine, skus=skus, **kw)

    monkeypatch.setattr(readers, "read_frame", guarded)
    monkeypatch.setattr(pipeline, "read_frame", guarded)


def test_sku_ranges_partition_the_catalogue_and_read_as_the_whole(store: Store) -> None:
    whole = read_frame(store.engine)
    ranges = sku_ranges(store.engine, 5)  # 12 SKUs: ranges of 3, so 4 of them
    assert [r.skus for r in ranges] == [3, 3, 3, 3] and ranges[-1].stop is None
    assert sum(r.skus for r in ranges) == whole["sku"].nunique()
    parts = [read_range(store.engine, r) for r in ranges]
    seen = [set(h["sku"]) for h, _ in parts]
    assert all(0 < len(s) < whole["sku"].nunique() for s in seen)
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # disjoint
    joined = pd.concat([h for h, _ in parts], ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole)
    products = pd.concat([p for _, p in parts], ignore_index=True)
    assert list(products["sku"]) == sorted(whole["sku"].unique())
    # A range past the catalogue's end reads nothing.
    empty, none = read_range(store.engine, SkuRange("~~~", None, 0))
    assert empty.empty and none.empty


def test_each_worker_reads_only_its_own_partition(
    store: Store, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_window = LocalRunner(*load_history(store.engine)).window()
    _no_whole_history(monkeypatch)
    runner = DaskRunner.open(client, store.engine, store.url, partitions=4)
    try:
        skus = client.gather(
            [client.submit(lambda p: sorted(set(p.history["sku"])), f) for f in runner.parts]
        )
        held = client.who_has(runner.parts)
        total = sum(len(s) for s in skus)
        assert total == 12 and all(0 < len(s) < total for s in skus)
        assert {w for ws in held.values() for w in ws} == set(client.ncores())
        first, last, n = runner.window()
        assert (first, last, n) == local_window
    finally:
        runner.close()


def test_one_worker_fits_the_very_same_model_as_local(store: Store) -> None:
    """Same builder, rows and parameters: on one worker lightgbm.dask grows the local trees
    (from targets cleaned alike: bulk orders capped on the workers too)."""
    history, products = load_history(store.engine)
    assert clean_targets(history, products).summary()["capped_days"] > 0
    local = backtest_on(LocalRunner(history, products), options())
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as one,
    ):
        runner = DaskRunner.open(one, store.engine, store.url, partitions=3)
        dask = backtest_on(runner, options())
        runner.close()
    assert dask.ranking == local.ranking
    cols = ["model", "fold", "sku", "date", "horizon", "y", "yhat"]
    pd.testing.assert_frame_equal(
        dask.predictions[cols], local.predictions[cols], check_exact=False, rtol=1e-6
    )
    # The selection reads the same ensembles and scales, so it ships the same composition.
    assert dask.ensembles == local.ensembles and dask.ensembles
    assert dask.scale_stats is not None and local.scale_stats is not None
    # (Pickled between processes, pandas gives the SKU index the str dtype: the labels match.)
    pd.testing.assert_frame_equal(
        dask.scale_stats.sort_index(), local.scale_stats.sort_index(), check_index_type=False
    )
    assert choose(dask) == choose(local)


def test_two_workers_backtest_like_local(store: Store, client: Any) -> None:
    """Across two workers the trees differ a little (bins and GOSS samples per worker)."""
    local = backtest_on(LocalRunner(*load_history(store.engine)), options())
    runner = DaskRunner.open(client, store.engine, store.url, partitions=2)
    try:
        dask = backtest_on(runner, options())
    finally:
        runner.close()
    for name, report in local.reports.items():
        want, got = report["overall"]["rmsse"], dask.reports[name]["overall"]["rmsse"]
        if name == "seasonal_naive":
            assert got == pytest.approx(want, rel=1e-12)
        else:
            # 12 SKUs: each worker's own bins move this small model's score by several percent
            # (6% with the targets' cleaning); the exact equality is the one-worker test's.
            assert got == pytest.approx(want, rel=0.1)


BASELINE_MODELS = [
    "seasonal_naive",
    "moving_average",
    "ses",
    "croston",
    "tsb",
    "ses_dow",
    "tsb_dow",
]


def test_selection_on_dask_is_the_local_selection(store: Store, client: Any) -> None:
    """Baselines forecast alike on any worker: the same reports, ensemble and shipped choice."""
    local = backtest_on(
        LocalRunner(*load_history(store.engine)), options(models=BASELINE_MODELS, folds=2)
    )
    runner = DaskRunner.open(client, store.engine, store.url, partitions=3)
    try:
        dask = backtest_on(runner, options(models=BASELINE_MODELS, folds=2))
    finally:
        runner.close()
    assert dask.ranking == local.ranking
    assert dask.ensembles == local.ensembles and len(dask.ensembles) == 1
    for name, report in local.reports.items():
        assert dask.reports[name]["overall"] == pytest.approx(report["overall"], rel=1e-9), name
    picked = choose(dask)
    assert picked == choose(local) and all(is_baseline(m) for m in picked.members)


def test_fallback_skus_are_classified_on_the_workers(
    store: Store, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sku_fallback's demand classes come from the partitions, as local classifies the whole."""
    local = LocalRunner(*load_history(store.engine)).demand_classes()
    _no_whole_history(monkeypatch)
    runner = DaskRunner.open(client, store.engine, store.url, partitions=4)
    try:
        classes = runner.demand_classes()
    finally:
        runner.close()
    pd.testing.assert_series_equal(classes.sort_index(), local.sort_index(), check_index_type=False)
    assert len(classes) == 12
    every = Selection("x", ("lgbm_tweedie/direct",), dict.fromkeys(set(classes), "tsb"))
    assert sku_fallback(every, classes) == dict.fromkeys(classes.index, "tsb")
    one = str(classes.iloc[0])
    picked = sku_fallback(Selection("x", ("lgbm_tweedie/direct",), {one: "tsb"}), classes)
    assert picked == sku_fallback(Selection("x", ("lgbm_tweedie/direct",), {one: "tsb"}), local)
    assert 0 < len(picked) <= 12


def test_train_on_dask_writes_a_local_layout_bundle(
    store: Store, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = train(store.engine, tmp_path / "local", options())
    _no_whole_history(monkeypatch)
    runner = DaskRunner.open(client, store.engine, store.url)
    try:
        outcome = train(store.engine, tmp_path / "dask", options(), runner=runner)
    finally:
        runner.close()
    a = load_bundle(local.path, models_dir=tmp_path / "local")
    b = load_bundle(outcome.path, models_dir=tmp_path / "dask")
    assert sorted(p.name for p in local.path.iterdir()) == sorted(
        p.name for p in outcome.path.iterdir()
    )
    for key in ("data_start", "data_end", "cutoff", "sku_count", "features", "strategy"):
        assert getattr(b.manifest, key) == getattr(a.manifest, key), key
    assert a.manifest.params == b.manifest.params
    assert sorted(a.artifacts) == sorted(b.artifacts)
    fa, fb = a.artifacts["model"], b.artifacts["model"]
    assert type(fa) is type(fb) and fa.feature_names_ == fb.feature_names_
    assert fb.n_train_rows_ == fa.n_train_rows_
    assert b.manifest.metrics["cold_start"]["skus"] == a.manifest.metrics["cold_start"]["skus"]


def _kill_one_worker_when_busy(client: Any, prefix: str, done: threading.Event) -> list[str]:
    """SIGKILL the first worker seen running a task named ``prefix``; its address, if any."""
    pids = client.run(os.getpid)
    while not done.is_set():
        for worker, keys in client.processing().items():
            if any(str(k).startswith(prefix) or prefix in str(k) for k in keys):
                os.kill(pids[worker], signal.SIGKILL)
                return [worker]
        time.sleep(0.005)
    return []


def test_forecast_all_survives_a_killed_worker_with_the_local_answer(
    store: Store, client: Any, champion: Champion
) -> None:
    bundle = champion.registry.load(champion.version)
    local = forecast_all(store.engine, bundle)
    done = threading.Event()
    result: dict[str, pd.DataFrame] = {}

    def run() -> None:
        try:
            result["frame"] = DaskForecastAll(client, store.url, partitions=12)(
                store.engine, bundle
            )
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    killed = _kill_one_worker_when_busy(client, "forecast_range", done)
    thread.join(120)
    assert killed, "no forecast task was seen running: nothing was killed"
    assert killed[0] not in client.ncores()
    pd.testing.assert_frame_equal(result["frame"], local, check_exact=False, rtol=1e-9)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests


def test_inventory_plan_on_dask_is_the_local_plan_and_stored_whole(
    store: Store, client: Any, champion: Champion
) -> None:
    days = {"lead_time_days": 3, "review_days": 4}  # within the 7-day model's horizon
    local = run_inventory_plan(store.engine, champion.registry, store=False, **days)
    dask = run_inventory_plan(
        store.engine,
        champion.registry,
        forecast=DaskForecastAll(client, store.url, partitions=3),
        **days,
    )
    pd.testing.assert_frame_equal(dask.frame, local.frame, check_exact=False, rtol=1e-9)
    stored = latest_plan(store.engine)
    assert stored is not None and stored.plan_id == dask.plan_id


def test_a_worker_dying_with_partitions_costs_a_reread_not_the_run(
    store: Store, client: Any
) -> None:
    runner = DaskRunner.open(client, store.engine, store.url, partitions=4)
    try:
        holder = next(iter(next(iter(client.who_has(runner.parts).values()))))
        os.kill(client.run(os.getpid)[holder], signal.SIGKILL)
        result = backtest_on(runner, options(models=["seasonal_naive"]))
        assert holder not in client.ncores()
    finally:
        runner.close()
    local = backtest_on(
        LocalRunner(*load_history(store.engine)), options(models=["seasonal_naive"])
    )
    pd.testing.assert_frame_equal(result.predictions, local.predictions)
    client.wait_for_workers(2, timeout=60)


def test_other_learners_are_refused_on_dask(store: Store, client: Any) -> None:
    from training.errors import TrainingError

    runner = DaskRunner.open(client, store.engine, store.url)
    try:
        with pytest.raises(TrainingError, match="dask engine trains LightGBM"):
            backtest_on(runner, options(models=["linear"]))
    finally:
        runner.close()


def test_lost_worker_during_the_distributed_fit_fails_cleanly(store: Store, tmp_path: Path) -> None:
    """Killed while LightGBM trains across both workers: an error and no bundle, or a bundle.

    On a cluster of its own: the survivor, held in LightGBM's network wait, is restarted by the
    runner, and under load its nanny may give up on it rather than restart it (one worker
    fewer), which must not leave the module's shared cluster short for the other tests.
    """
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        runner = DaskRunner.open(client, store.engine, store.url, partitions=2)
        done = threading.Event()
        errors: list[BaseException] = []
        models = tmp_path / "models"

        def run() -> None:
            try:
                train(store.engine, models, options(n_estimators=400), runner=runner)
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=run)
        thread.start()
        killed = _kill_one_worker_when_busy(client, "_train_part", done)
        thread.join(180)
        runner.close()
        assert not thread.is_alive(), "the run neither finished nor failed"
        client.wait_for_workers(1, timeout=60)  # the cluster still serves
    assert killed, "LightGBM's training tasks were never seen running"
    written = list(models.glob("*/manifest.json")) if models.exists() else []
    if errors:
        assert "worker was lost" in str(errors[0]) and not written
    else:
        assert len(written) == 1


def test_dask_fit_cleans_the_targets_as_the_local_fit(store: Store, client: Any) -> None:
    """Stock-outs, zero runs and store closures left out and bulk orders capped on the workers
    exactly as Forecaster.fit does (closures read from the store's whole day, not a partition)."""
    from training.forecaster import Forecaster

    def unfitted() -> Forecaster:
        return Forecaster(strategy="direct", horizon=7, model_params={"n_estimators": 5})

    history, products = load_history(store.engine)
    local = unfitted().fit(history, products)
    runner = DaskRunner.open(client, store.engine, store.url, partitions=3)
    try:
        dask = runner.fit(unfitted())
    finally:
        runner.close()
    assert local.cleaning_["censored_days"] > 0 and local.cleaning_["stock_out_days"] > 0
    assert dask.cleaning_ == local.cleaning_
    assert dask.yearly_ == local.yearly_ is False  # 200 days: no yearly features
    assert dask.n_train_rows_ == local.n_train_rows_
    assert dask.stages_[0].builder.unit_caps_ == local.stages_[0].builder.unit_caps_
    assert dask.stages_[0].names == local.stages_[0].names


def test_a_workers_fold_scores_the_days_the_local_backtest_scores() -> None:
    """A partition's fold rows leave out the catalogue's closed store days and the flagged
    stock-outs, as run_backtest does (the closures read from the whole store's days)."""
    from training import backtest as bt
    from training.cleaning import store_closures
    from training.engine import dask_tasks as tasks
    from training.forecaster import Forecaster

    history, products, closed_day, _ = with_closure_and_stock_out()
    local = bt.run_backtest(history, products, [Forecaster(model="moving_average", horizon=7)],
                            folds=1, horizon=7)  # fmt: skip
    cut = local.cutoffs[0]
    model = Forecaster(model="moving_average", horizon=7)
    model.fit(history, products, visible=(history["date"] <= cut).to_numpy())
    closures = store_closures(history, products)
    assert len(closures) == 1 and closures[0][1] == closed_day
    mine = sorted(products["sku"])[:4]  # one worker's SKU range
    part = tasks.Partition(
        SkuRange(mine[0], sorted(products["sku"])[4], 4),
        history[history["sku"].isin(mine)].reset_index(drop=True),
        products[products["sku"].isin(mine)],
    )
    got = tasks.fold_predictions(part, model, cut, 7, tasks.scored_days(part, closures, cut))
    want = local.predictions[local.predictions["sku"].isin(mine)]
    key = ["sku", "date"]
    assert got[key].sort_values(key).values.tolist() == want[key].sort_values(key).values.tolist()
    assert len(got) < 4 * 7  # something was left out


def test_label_groups_give_every_part_sales() -> None:
    from training.engine.dask_runner import label_groups
    from training.errors import TrainingError

    assert label_groups([5.0, 0.0, 3.0, 0.0]) == [[2], [0, 1, 3]]
    assert label_groups([0.0, 2.0]) == [[1, 0]]
    assert label_groups([1.0, 2.0]) == [[0], [1]]
    assert label_groups([]) == []
    with pytest.raises(TrainingError, match="all zero"):
        label_groups([0.0, 0.0])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def unsold_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """Six SKUs of which every other one never sold."""
    catalogue = generate(SynthConfig(n_skus=6, n_days=120, seed=9, end=dt.date(2026, 12, 6)))
    unsold = set(sorted(catalogue.products["sku"])[1::2])
    catalogue.sales.loc[catalogue.sales["sku"].isin(unsold), "units"] = 0
    with own_store(request, tmp_path_factory.mktemp("unsold")) as url:
        engine = make_engine(url)
        write_catalogue(engine, catalogue)
        yield Store(url, engine)
        engine.dispose()


def test_a_worker_holding_only_unsold_skus_trains(unsold_store: Store, client: Any) -> None:
    """One SKU per partition, partitions placed on the workers in turn, every other SKU never
    sold: one worker holds only zero targets, which LightGBM's tweedie refuses on a machine
    ("sum of labels is zero"); its parts join a part with sales (label_groups)."""
    from training.forecaster import Forecaster

    runner = DaskRunner.open(client, unsold_store.engine, unsold_store.url, partitions=6)
    try:
        model = runner.fit(
            Forecaster(model="lgbm_tweedie", strategy="direct", horizon=7,
                       model_params={"n_estimators": 10})
        )  # fmt: skip
    finally:
        runner.close()
    assert model.stages_ and model.n_train_rows_ > 0
