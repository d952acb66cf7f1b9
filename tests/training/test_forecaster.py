"""Forecasters: strategies, no look-ahead, baselines, cold start and the backtest around them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.training.frames import make_history, make_products, with_closure_and_stock_out
from training import backtest as bt
from training import forecaster as forecaster_module
from training.coldstart import backtest_cold_start, cold_start_forecaster
from training.forecaster import Forecaster, NotFittedForecaster

SMALL = {"n_estimators": 20, "num_leaves": 15, "min_data_in_leaf": 5}
H = 14


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    history = make_history(n_skus=6, n_days=400, seed=3, offsets=[0, 0, 0, 30, 60, 90])
    products = make_products(sorted(history["sku"].unique()))
    return history, products


def _split(history: pd.DataFrame, origin: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    train = history[history["date"] <= origin].reset_index(drop=True)
    frame = bt.hide_after(history, origin, origin + pd.Timedelta(days=H))
    return train, frame


@pytest.mark.parametrize("strategy", ["direct", "recursive", "multi"])
def test_strategies_forecast_every_sku_and_day(
    data: tuple[pd.DataFrame, pd.DataFrame], strategy: str
) -> None:
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    model = Forecaster(
        model="lgbm_tweedie", strategy=strategy, horizon=H, bucket=7, model_params=SMALL
    )
    model.fit(train, products)
    expected_stages = {"direct": 1, "recursive": 1, "multi": 2}[strategy]
    assert len(model.stages_) == expected_stages
    pred = model.predict(frame, products, origin)
    assert len(pred) == history["sku"].nunique() * H
    assert sorted(pred["horizon"].unique()) == list(range(1, H + 1))
    assert (pred["mean"] >= 0).all() and pred["mean"].notna().all()
    assert pred["date"].min() == origin + pd.Timedelta(days=1)


@pytest.mark.parametrize("strategy", ["direct", "recursive", "multi"])
def test_future_units_never_change_a_forecast(
    data: tuple[pd.DataFrame, pd.DataFrame], strategy: str
) -> None:
    """Handing predict the true future units (a leak) must change nothing."""
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    model = Forecaster(model="lgbm_tweedie", strategy=strategy, horizon=H, model_params=SMALL)
    model.fit(train, products)
    leaky = history[history["date"] <= origin + pd.Timedelta(days=H)].reset_index(drop=True)
    leaky = leaky.assign(units=leaky["units"] * 10 + 5)
    leaky.loc[leaky["date"] <= origin, "units"] = frame.loc[frame["date"] <= origin, "units"]
    a = model.predict(frame, products, origin)
    b = model.predict(leaky, products, origin)
    np.testing.assert_allclose(a["mean"].to_numpy(), b["mean"].to_numpy())


def test_seasonal_naive_repeats_last_week(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    model = Forecaster(model="seasonal_naive", horizon=H).fit(train, products)
    pred = model.predict(frame, products, origin)
    sku = pred["sku"].iloc[0]
    last_week = train[train["sku"] == sku].tail(7)["units"].to_numpy()
    got = pred[pred["sku"] == sku].sort_values("date")["mean"].to_numpy()
    np.testing.assert_allclose(got, np.tile(last_week, 2))


def test_errors(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    model = Forecaster(model="lgbm_tweedie", strategy="direct", horizon=H, model_params=SMALL)
    with pytest.raises(NotFittedForecaster):
        model.predict(history, products, history["date"].max())
    model.fit(history, products)
    with pytest.raises(ValueError, match="exceeds"):
        model.predict(history, products, history["date"].max(), horizon=H + 1)


class _Spy(Forecaster):
    """Records the last training day it was given (of the rows it may read, when a view)."""

    seen: list[pd.Timestamp] = []

    def fit(self, history, products, progress=None, *, visible=None):  # type: ignore[no-untyped-def]
        known = history["units"].notna().to_numpy()
        if visible is not None:
            known = known & visible
        _Spy.seen.append(history.loc[known, "date"].max())
        return super().fit(history, products, progress, visible=visible)


def test_backtest_never_trains_past_its_cutoff(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    _Spy.seen = []
    candidates = [
        Forecaster(model="seasonal_naive", horizon=H),
        _Spy(model="lgbm_tweedie", strategy="direct", horizon=H, model_params=SMALL),
    ]
    result = bt.run_backtest(history, products, candidates, folds=3, horizon=H, metric="rmsse")
    last = history["date"].max()
    assert result.cutoffs == [last - pd.Timedelta(days=H * k) for k in (3, 2, 1)]
    assert _Spy.seen == result.cutoffs
    assert len(result.predictions) == 3 * 2 * history["sku"].nunique() * H
    scores = [result.score(n) for n in result.ranking]
    assert scores == sorted(scores)
    doc = result.to_json()
    assert doc["champion"] == result.ranking[0]
    learned = next(n for n in doc["models"] if n != "seasonal_naive")
    assert "value_added_over_seasonal_naive" in doc["models"][learned]
    assert set(doc["models"][learned]["by_segment"]) == {"category", "store", "demand_class"}
    cov = bt.coverage_report(result, learned)
    assert 0.0 <= cov["interval_coverage"] <= 1.0 and cov["rows"] > 0


def test_backtest_scores_no_closed_or_stocked_out_day() -> None:
    history, products, closed_day, out_sku = with_closure_and_stock_out()
    candidates = [Forecaster(model=n, horizon=H) for n in ("seasonal_naive", "moving_average")]
    result = bt.run_backtest(history, products, candidates, folds=2, horizon=H)
    rows = result.predictions
    store_of = dict(zip(products["sku"], products["store"], strict=True))
    closed = rows["date"].eq(closed_day) & rows["sku"].map(store_of).eq("CA_1")
    stocked_out = rows["sku"].eq(out_sku) & rows["date"].eq(closed_day - pd.Timedelta(days=2))
    assert not closed.any() and not stocked_out.any()
    # Every other day of both folds is scored, for every model: 2 x 8 x 14, less 4 + 1.
    assert len(rows[rows["model"] == "moving_average"]) == 2 * 8 * H - 4 - 1
    # The other store's SKUs sold on the closed day: scored.
    assert (rows["date"].eq(closed_day) & rows["sku"].map(store_of).eq("TX_1")).sum() == 2 * 4


def test_backtest_ranks_by_wrmsse(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    names = ("seasonal_naive", "moving_average", "tsb", "ses")
    candidates = [Forecaster(model=n, horizon=H) for n in names]
    result = bt.run_backtest(
        history, products, candidates, folds=2, horizon=H, metric="wrmsse", ensemble_top=2
    )
    scores = [result.reports[n]["overall"]["wrmsse"] for n in result.ranking]
    assert all(s is not None for s in scores) and scores == sorted(scores)
    assert [result.score(n) for n in result.ranking] == scores
    assert any(n.startswith("ensemble(") for n in result.ranking)  # compositions carry it too
    table = result.table()  # what `salesfc train` prints: the ranking metric shown
    assert list(table.columns[:3]) == ["model", "wrmsse", "rmsse"]
    assert table["wrmsse"].tolist() == scores


def test_backtest_predictions_share_the_historys_sku_strings(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Every model's backtest rows hold the history's SKU strings (object, as readers give
    them), not a string of their own per row: pandas infers its own string dtype for a new
    frame's str column, and a merge with the history then made one object per row (50 MB per
    model and fold at M5 scale; docs/benchmarks.md, M5 scale again: session 10)."""
    history, products = data
    # One str object per SKU shared by its rows, as featurestore.readers builds the column.
    codes, names = pd.factorize(history["sku"])
    sku_names = np.asarray(names, dtype=object)
    history = history.assign(sku=pd.Series(sku_names[codes], dtype=object))
    originals = {id(s) for s in sku_names}
    candidates = [
        Forecaster(model="seasonal_naive", horizon=H),
        Forecaster(model="lgbm_tweedie", strategy="direct", horizon=H, model_params=SMALL),
    ]
    result = bt.run_backtest(history, products, candidates, folds=1, horizon=H)
    sku = result.predictions["sku"]
    assert sku.dtype == object
    assert {id(s) for s in sku.to_numpy()} <= originals
    origin = history["date"].max() - pd.Timedelta(days=H)
    frame = bt.hide_after(history, origin, history["date"].max())
    for model in candidates:
        out = model.fit(frame, products).predict(frame, products, origin)
        assert out["sku"].dtype == object, model.name


def test_backtest_ensemble_is_the_mean(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    candidates = [
        Forecaster(model="lgbm_tweedie", strategy="direct", horizon=H, model_params=SMALL),
        Forecaster(model="moving_average", horizon=H),
    ]
    result = bt.run_backtest(history, products, candidates, folds=1, horizon=H, ensemble_top=2)
    ens = next(n for n in result.reports if n.startswith("ensemble"))
    p = result.predictions.set_index(["model", "sku", "date"])["yhat"]
    members = [c.name for c in candidates]
    expected = (p.loc[members[0]] + p.loc[members[1]]) / 2
    np.testing.assert_allclose(p.loc[ens].sort_index(), expected.sort_index())


def test_backtest_refuses_too_little_history(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    with pytest.raises(ValueError, match="not enough history"):
        bt.run_backtest(history, products, [Forecaster(model="seasonal_naive")], folds=14)


def test_cold_start_uses_no_sales_history(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    model = cold_start_forecaster(H, **SMALL).fit(history, products)
    names = model.feature_names_
    assert names and not any(n.startswith(("lag_", "roll_", "ewm_", "zero_")) for n in names)
    report = backtest_cold_start(history, products, horizon=H, share=0.34)
    assert report["skus"] == 2
    assert report["wape"] is not None and report["wape"] >= 0


@pytest.mark.parametrize(
    ("strategy", "bucket", "threads", "flow"),
    [
        ("direct", 14, None, "one stage"),
        ("multi", 7, 2, "lockstep"),  # two stages, a thread each: binned together
        ("multi", 7, 1, "in turn"),  # one thread: stage after stage
        ("multi", 4, 2, "side by side"),  # four stages on two threads
    ],
)
def test_blockwise_training_matches_the_whole_matrix(
    data: tuple[pd.DataFrame, pd.DataFrame],
    strategy: str,
    bucket: int,
    threads: int | None,
    flow: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building the LightGBM dataset from SKU blocks (big data) gives the same model; the
    stages' blocks are built together (each block's grid once for every stage), and binned in
    lockstep when every stage has a thread: one block's matrices kept at a time, not a stage's."""
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    params = {
        **SMALL,
        "data_sample_strategy": "bagging",
        "bagging_fraction": 0.5,
        "feature_fraction": 0.5,
        "num_threads": threads,
    }
    kw = {
        "model": "lgbm_tweedie",
        "strategy": strategy,
        "horizon": H,
        "bucket": bucket,
        "model_params": params,
    }
    whole = Forecaster(**kw).fit(train, products)  # type: ignore[arg-type]
    shared: list[forecaster_module._SharedBlocks] = []
    real_shared = forecaster_module._SharedBlocks

    def recorded(*args: object, **kwargs: object) -> object:
        shared.append(real_shared(*args, **kwargs))  # type: ignore[arg-type]
        return shared[-1]

    monkeypatch.setattr(forecaster_module, "_SharedBlocks", recorded)
    built: list[int] = []
    real = Forecaster._feature_blocks

    def spy(self: Forecaster, *args: object, **kwargs: object) -> object:
        out = real(self, *args, **kwargs)  # type: ignore[arg-type]
        built.append(len(out[0].blocks))
        return out

    monkeypatch.setattr(Forecaster, "_feature_blocks", spy)
    passes: list[int] = []
    real_stages = forecaster_module.transform_stages

    def counted(builders: list[object], *args: object, **kwargs: object) -> object:
        passes.append(len(builders))
        return real_stages(builders, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forecaster_module, "transform_stages", counted)
    # Blocks of at least 300 training rows (one or two SKUs); the bin sample covers every row.
    blocks = Forecaster(**kw, block_rows=300, bin_sample_rows=10**6)  # type: ignore[arg-type]
    blocks.fit(train, products)
    assert built and all(n >= 4 for n in built)
    n_stages = len(blocks.stages_)
    assert passes == [n_stages] * (built[0] + 1)  # every block and the bin sample, once
    assert n_stages == {"one stage": 1, "lockstep": 2, "in turn": 2, "side by side": 4}[flow]
    (blocks_of_fit,) = shared
    assert blocks_of_fit.lockstep == (flow == "lockstep")
    assert not blocks_of_fit.kept  # every kept matrix was taken
    if flow == "lockstep":
        assert blocks_of_fit.most_kept == n_stages - 1  # one block's, never more
    elif flow == "in turn":
        assert blocks_of_fit.most_kept == built[0] + 1  # the second stage's whole matrix
    a = whole.predict(frame, products, origin)
    b = blocks.predict(frame, products, origin)
    np.testing.assert_array_equal(a["mean"].to_numpy(), b["mean"].to_numpy())
    # A partial bin sample still trains a sound model on every row.
    sampled = Forecaster(**kw, block_rows=300, bin_sample_rows=500).fit(train, products)  # type: ignore[arg-type]
    c = sampled.predict(frame, products, origin)["mean"].to_numpy()
    assert np.isfinite(c).all()
    assert abs(c.sum() / a["mean"].sum() - 1) < 0.2


def test_blockwise_training_sorts_interleaved_skus(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    shuffled = train.sort_values(["date", "sku"], ignore_index=True)
    kw = {"model": "lgbm_tweedie", "strategy": "direct", "horizon": H, "model_params": SMALL}
    a = Forecaster(**kw).fit(train, products).predict(frame, products, origin)  # type: ignore[arg-type]
    b = (
        Forecaster(**kw, block_rows=300, bin_sample_rows=10**6)  # type: ignore[arg-type]
        .fit(shuffled, products)
        .predict(frame, products, origin)
    )
    np.testing.assert_array_equal(a["mean"].to_numpy(), b["mean"].to_numpy())


def test_drop_features_removes_them_from_every_stage(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    drop = ("roll_min_7", "roll_max_7", "te_item_id")
    model = Forecaster(
        model="lgbm_tweedie",
        strategy="multi",
        horizon=H,
        bucket=7,
        model_params=SMALL,
        drop_features=drop,
    ).fit(train, products)
    for names in model.stage_features().values():
        assert not set(drop) & set(names)
        assert "roll_mean_7" in names
    assert model.predict(frame, products, origin)["mean"].notna().all()


def test_tree_budget_is_shared_between_stages(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    params = {"n_estimators": 20, "learning_rate": 0.05, "num_leaves": 7}
    total = Forecaster(strategy="multi", bucket=7, horizon=H, model_params=params)
    total.fit(history, products)
    assert [s.estimator.get_params()["n_estimators"] for s in total.stages_] == [10, 10]
    assert all(s.estimator.get_params()["learning_rate"] == 0.1 for s in total.stages_)
    assert all(s.estimator.booster_.num_trees() == 10 for s in total.stages_)  # type: ignore[attr-defined]
    each = Forecaster(
        strategy="multi", bucket=7, horizon=H, model_params=params, tree_budget="per_stage"
    ).fit(history, products)
    assert [s.estimator.get_params()["n_estimators"] for s in each.stages_] == [20, 20]
    direct = Forecaster(strategy="direct", horizon=H, model_params=params).fit(history, products)
    assert direct.stages_[0].estimator.get_params()["n_estimators"] == 20


def test_default_forecaster_is_the_benchmarked_one(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """The default: lag floors 14 and 28 for 28 days, trimmed features, recent rows only."""
    from training import forecaster as F

    history, products = data
    model = Forecaster(model_params={"n_estimators": 10}).fit(history, products)
    assert model.strategy == F.DEFAULT_STRATEGY == "multi"
    assert [s.min_lag for s in model.stages_] == [14, 28]
    assert [(s.first_h, s.last_h) for s in model.stages_] == [(1, 14), (15, 28)]
    for names in model.stage_features().values():
        assert not set(F.DEFAULT_DROP_FEATURES) & set(names)
        assert "roll_mean_91" in names and "roll_mean_180" not in names
    assert model.max_train_days == F.DEFAULT_MAX_TRAIN_DAYS


def test_stages_side_by_side_match_stages_in_turn(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Stages trained side by side (one thread each) give the model trained in turn on one."""
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    kw = {"model": "lgbm_tweedie", "strategy": "multi", "horizon": H, "bucket": 7}
    side = Forecaster(**kw, model_params={**SMALL, "num_threads": 2})  # type: ignore[arg-type]
    turn = Forecaster(**kw, model_params={**SMALL, "num_threads": 1}, parallel_stages=False)  # type: ignore[arg-type]
    assert side._stage_workers(2) == (2, 1) and turn._stage_workers(2) == (1, None)
    side.fit(train, products)
    turn.fit(train, products)
    assert [s.min_lag for s in side.stages_] == [7, 14]
    # Each stage trained on one thread; predictions still use the model's own thread count.
    assert side.stages_[0].estimator.get_params()["train_threads"] == 1
    assert side.stages_[0].estimator.get_params()["num_threads"] == 2
    a = side.predict(frame, products, origin)["mean"].to_numpy()
    b = turn.predict(frame, products, origin)["mean"].to_numpy()
    np.testing.assert_array_equal(a, b)
    assert side.fit_seconds_["estimator"] > 0 and side.fit_seconds_["features"] > 0


def test_training_rows_above_the_cap_are_a_seeded_uniform_sample(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Above max_train_rows the forecaster trains on that many eligible rows, the same ones for
    the same history, spread over every SKU and weekday; at or below the cap, on all of them."""
    from training.forecaster import _training_rows

    history, products = data
    every = _training_rows(history, 28, None, None)
    eligible = int(every.sum())
    assert _training_rows(history, 28, None, eligible).sum() == eligible
    cap = eligible // 3
    sample = _training_rows(history, 28, None, cap)
    assert sample.sum() == cap
    assert not (sample & ~every).any()  # only rows that were eligible
    assert np.array_equal(sample, _training_rows(history, 28, None, cap))
    kept = history[sample]
    assert set(kept["sku"]) == set(history.loc[every, "sku"])
    assert kept["date"].dt.day_of_week.nunique() == 7
    model = Forecaster(max_train_rows=cap, model_params=SMALL, horizon=H, bucket=7)
    model.fit(history, products)
    assert model.n_train_rows_ == cap


# -- issue 12: fresh data, yearly features, the year-ago fold, closures --------------------------


def _with_horizon(history: pd.DataFrame, origin: pd.Timestamp, days: int) -> pd.DataFrame:
    """The history to the origin plus ``days`` future rows (units unknown, covariates kept)."""
    past = history[history["date"] <= origin]
    last = past.groupby("sku", sort=False).tail(1)
    future = [
        last.assign(date=origin + pd.Timedelta(days=k), units=np.nan) for k in range(1, days + 1)
    ]
    from tests.training.frames import as_history

    return as_history(pd.concat([past, *future], ignore_index=True))


def test_a_spike_or_a_stock_out_on_the_last_day_moves_day_one(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """A short first stage reads yesterday: the last day's news reaches day 1 (with the lag
    floors 14 and 28 alone it reaches nothing before day 14)."""
    from training.forecaster import SHORT_FLOORS

    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=28)
    train = history[history["date"] <= origin].reset_index(drop=True)
    model = Forecaster(model_params=SMALL, floors=SHORT_FLOORS).fit(train, products)
    assert [(s.min_lag, s.first_h, s.last_h) for s in model.stages_] == [
        (1, 1, 1),
        (14, 2, 14),
        (28, 15, 28),
    ]
    last = (train["date"] == origin).to_numpy()
    typical = float(train["units"].mean())
    spike = train.copy()
    spike.loc[last, "units"] = 20 * typical + 20
    out = spike.copy()
    week = (train["date"] > origin - pd.Timedelta(days=7)).to_numpy()
    out.loc[week, "units"] = 0  # a week sold out up to the last day

    def day_one(frame: pd.DataFrame) -> np.ndarray:
        pred = model.predict(_with_horizon(frame, origin, 28), products, origin)
        return pred.loc[pred["horizon"] == 1, "mean"].to_numpy()

    base = day_one(train)
    assert (day_one(spike) != base).all()
    # Most SKUs' day 1 moves (a SKU whose last week held no sale anyway may not).
    assert (day_one(out) != base).mean() >= 0.5
    model = Forecaster(model_params=SMALL, bucket=14).fit(train, products)
    base = day_one(train)
    assert np.array_equal(day_one(spike), base) and np.array_equal(day_one(out), base)


def test_yearly_features_need_two_years_of_history() -> None:
    products = make_products(["ITEM_0_S", "ITEM_1_S"])
    short = make_history(2, 500, seed=1)
    long = make_history(2, 800, seed=1)
    yearly = {"week", "month", "lag_364"}
    for frame, kept in ((short, False), (long, True)):
        model = Forecaster(model_params=SMALL, horizon=H, bucket=7, floors=None)
        model.fit(frame, products)
        assert model.yearly_ is kept
        for names in model.stage_features().values():
            assert (yearly <= set(names)) is kept
            assert bool(yearly & set(names)) is kept


def test_one_fold_sits_a_year_before_the_cutoff_when_history_allows() -> None:
    last = pd.Timestamp("2024-12-31")
    plain = bt.cutoffs(last, folds=3, horizon=28, step=28)
    assert plain == [last - pd.Timedelta(days=28 * k) for k in (3, 2, 1)]
    long = bt.cutoffs(last, folds=3, horizon=28, step=28, first_date=pd.Timestamp("2023-01-01"))
    assert long == [last - pd.Timedelta(days=364), *plain[1:]]
    assert long[0].day_of_week == last.day_of_week  # the same weekdays a year before
    for start in ("2023-09-01", "2024-01-15"):  # under half a year before it, or after it
        short = bt.cutoffs(last, folds=3, horizon=28, step=28, first_date=pd.Timestamp(start))
        assert short == plain
    assert bt.cutoffs(
        last, folds=1, horizon=28, step=28, first_date=pd.Timestamp("2020-01-01")
    ) == [last - pd.Timedelta(days=28)]


def test_closed_days_are_forecast_zero(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    history, products = data
    origin = history["date"].max() - pd.Timedelta(days=H)
    train, frame = _split(history, origin)
    model = Forecaster(model_params=SMALL, horizon=H, bucket=7, floors=None).fit(train, products)
    shut = origin + pd.Timedelta(days=3)
    closed = frame.assign(closed=(frame["date"] == shut).astype(np.int8))
    pred = model.predict(closed, products, origin)
    assert (pred.loc[pred["date"] == shut, "mean"] == 0).all()
    assert (pred.loc[pred["date"] != shut, "mean"] > 0).all()


# The forecaster of the fit-on-a-view tests.
VIEW_FIT: dict[str, object] = {
    "model": "lgbm_tweedie",
    "strategy": "multi",
    "horizon": H,
    "bucket": 7,
    "model_params": SMALL,
}


@pytest.mark.parametrize("blocks", [False, True])
def test_a_fit_on_visible_rows_is_the_fit_on_their_copy(
    data: tuple[pd.DataFrame, pd.DataFrame], blocks: bool
) -> None:
    """Forecaster.fit(visible=...) (backtest folds, the cold-start backtest) never reads a row
    it cannot see: with every row after the cut-off and a hidden SKU's rows turned into noise,
    and a SKU launched after the cut-off, it fits exactly the model fitted on a copy of the
    visible rows (the same trees, the same forecasts)."""
    history, products = data
    cut = history["date"].min() + pd.Timedelta(days=200)
    hidden = "ITEM_1_S"
    launched = history.groupby("sku")["date"].transform("min")
    assert (launched <= cut).all()  # the fixture's SKUs all start before; add one that does not
    newcomer = history[history["sku"] == "ITEM_5_S"].assign(sku="ITEM_9_S")
    newcomer = newcomer[newcomer["date"] > cut + pd.Timedelta(days=10)]
    history = pd.concat([history, newcomer], ignore_index=True)
    products = make_products(sorted(history["sku"].unique()))
    visible = ((history["date"] <= cut) & (history["sku"] != hidden)).to_numpy()
    copy = history[visible].reset_index(drop=True)
    rng = np.random.default_rng(1)
    noisy = history.copy()
    n = int((~visible).sum())
    for col in ("units", "price", "promo_depth"):
        noisy.loc[~visible, col] = rng.uniform(0, 50, n).astype(np.float32)
    for col in ("on_promotion", "is_event", "is_holiday", "stock_out", "closed"):
        if col in noisy:
            noisy.loc[~visible, col] = rng.integers(0, 2, n).astype(noisy[col].dtype)
    # A seeded sample: the same rows on the view as on the copy.
    kw: dict[str, object] = {**VIEW_FIT, "max_train_rows": 500}
    if blocks:
        kw.update(block_rows=150, bin_sample_rows=200)  # blocks and a sampled bin set
    a = Forecaster(**kw).fit(copy, products)  # type: ignore[arg-type]
    b = Forecaster(**kw).fit(noisy, products, visible=visible)  # type: ignore[arg-type]
    assert a.n_train_rows_ == b.n_train_rows_ == 500
    assert a.cleaning_ == b.cleaning_ and a.trained_until_ == b.trained_until_
    for sa, sb in zip(a.stages_, b.stages_, strict=True):
        assert sa.estimator.booster_.model_to_string() == sb.estimator.booster_.model_to_string()
    frame = bt.hide_after(history[history["sku"] != hidden], cut, cut + pd.Timedelta(days=H))
    pa = a.predict(frame, products, cut)["mean"].to_numpy()
    pb = b.predict(frame, products, cut)["mean"].to_numpy()
    np.testing.assert_array_equal(pa, pb)


def test_a_fit_on_visible_rows_not_grouped_by_sku_fits_their_copy(
    data: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """Rows not grouped by SKU cannot be read in place: Forecaster.fit(visible=...) fits a copy
    of the visible rows, the same trees as a fit on that copy; a baseline only takes the last
    visible day with known units."""
    history, products = data
    cut = history["date"].min() + pd.Timedelta(days=200)
    shuffled = history.sample(frac=1.0, random_state=3).reset_index(drop=True)
    visible = (shuffled["date"] <= cut).to_numpy()
    a = Forecaster(**VIEW_FIT).fit(history[history["date"] <= cut], products)  # type: ignore[arg-type]
    b = Forecaster(**VIEW_FIT).fit(shuffled, products, visible=visible)  # type: ignore[arg-type]
    assert a.trained_until_ == b.trained_until_ == cut
    for sa, sb in zip(a.stages_, b.stages_, strict=True):
        assert sa.estimator.booster_.model_to_string() == sb.estimator.booster_.model_to_string()
    base = Forecaster(model="moving_average", horizon=H).fit(shuffled, products, visible=visible)
    assert base.trained_until_ == cut and base.stages_ == []
