"""Selection: the shipped model is always the backtest's best (baselines and the ensemble
included), per-segment baseline fallbacks where they win, and serving forecasts what shipped."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from featurestore.ingest import ingest_frames
from tests.training.frames import as_history, make_history, make_products
from training import backtest as bt
from training.bundle import load_bundle
from training.estimators import BASELINES
from training.forecaster import Forecaster
from training.options import TrainOptions
from training.pipeline import train
from training.predict import BundleForecaster, ShippedForecast, hide_after
from training.quantiles import QuantileCalibrator
from training.selection import Selection, choose, demand_classes, sku_fallback

SMALL = {"n_estimators": 10, "num_leaves": 7, "min_data_in_leaf": 5, "num_threads": 1}
H = 14


def _weekly(n_skus: int, n_days: int, seed: int = 1) -> pd.DataFrame:
    """Each SKU repeats one week exactly: seasonal naive forecasts it without error."""
    rng = np.random.default_rng(seed)
    frame = make_history(n_skus=n_skus, n_days=n_days, seed=seed)
    weeks = {s: rng.integers(0, 9, 7).astype(np.float64) for s in frame["sku"].unique()}
    dow = frame["date"].dt.day_of_week.to_numpy()
    frame["units"] = [weeks[s][d] for s, d in zip(frame["sku"], dow, strict=True)]
    return as_history(frame)


def test_a_baseline_that_wins_the_backtest_ships() -> None:
    history = _weekly(4, 150)
    products = make_products(sorted(history["sku"].unique()))
    candidates = [
        Forecaster(model="seasonal_naive", horizon=H),
        Forecaster(model="lgbm_poisson", strategy="direct", horizon=H, model_params=SMALL),
    ]
    result = bt.run_backtest(history, products, candidates, folds=2, horizon=H)
    assert result.score("seasonal_naive") < result.score("lgbm_poisson/direct")
    # Before, selection skipped baselines and shipped lgbm_poisson whatever the scores.
    assert choose(result) == Selection("seasonal_naive", ("seasonal_naive",))


def test_an_ensemble_is_named_in_a_fixed_order_whatever_the_ranking() -> None:
    """Members are chosen by rank but named learned model first, then baselines by name: a
    cluster whose trees move the ranking a little ships the local bundle's name."""
    history = _weekly(4, 150)
    products = make_products(sorted(history["sku"].unique()))
    candidates = [
        Forecaster(model="seasonal_naive", horizon=H),
        Forecaster(model="moving_average", horizon=H),
        Forecaster(model="lgbm_poisson", strategy="direct", horizon=H, model_params=SMALL),
    ]
    result = bt.run_backtest(history, products, candidates, folds=2, horizon=H, ensemble_top=3)
    assert result.ranking.index("seasonal_naive") < result.ranking.index("lgbm_poisson/direct")
    members = ["lgbm_poisson/direct", "moving_average", "seasonal_naive"]
    assert result.ensembles == {"ensemble(" + "+".join(members) + ")": members}


def test_the_ensemble_ships_when_it_is_best_and_holds_one_learned_model() -> None:
    history = make_history(n_skus=4, n_days=160, seed=4)
    products = make_products(sorted(history["sku"].unique()))
    candidates = [
        Forecaster(model="lgbm_tweedie", strategy="direct", horizon=H, model_params=SMALL),
        Forecaster(model="lgbm_poisson", strategy="direct", horizon=H, model_params=SMALL),
        Forecaster(model="moving_average", horizon=H),
        Forecaster(model="ses", horizon=H),
    ]
    result = bt.run_backtest(history, products, candidates, folds=1, horizon=H, ensemble_top=3)
    (name, members), *_ = result.ensembles.items()
    assert len(members) == 3 and sum(m not in BASELINES for m in members) == 1
    p = result.predictions.set_index(["model", "sku", "date"])["yhat"]
    expected = sum(p.loc[m].sort_index() for m in members) / 3
    np.testing.assert_allclose(p.loc[name].sort_index(), expected)
    # Made the best, the ensemble is what choose ships.
    result.reports[name]["overall"]["rmsse"] = 0.0
    result.ranking = [name, *[n for n in result.ranking if n != name]]
    chosen = choose(result)
    assert chosen.members == tuple(members) and chosen.learned is not None


def _segment_result() -> bt.BacktestResult:
    """A learned model good on smooth SKUs and poor on intermittent ones, where TSB is good."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        cls = "smooth" if i < 20 else "intermittent"
        y = rng.poisson(5.0 if cls == "smooth" else 0.3, 28).astype(float)
        good, bad = y + rng.normal(0, 0.3, 28), y + rng.normal(0, 2.0, 28)
        for model, yhat in (
            ("lgbm_tweedie/multi", good if cls == "smooth" else bad),
            ("tsb", bad if cls == "smooth" else good),
        ):
            rows.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "fold": 0,
                        "cutoff": pd.Timestamp("2024-03-01"),
                        "sku": f"S{i}",
                        "date": pd.date_range("2024-03-02", periods=28),
                        "horizon": np.arange(1, 29),
                        "y": y,
                        "yhat": np.clip(yhat, 0, None),
                        "category": "C",
                        "store": "X",
                        "demand_class": cls,
                    }
                )
            )
    preds = pd.concat(rows, ignore_index=True)
    scale = pd.DataFrame(
        {
            "sku": np.repeat([f"S{i}" for i in range(40)], 60),
            "date": np.tile(pd.date_range("2024-01-01", periods=60), 40),
            "units": rng.poisson(2.0, 2400).astype(float),
        }
    )
    from training.metrics import evaluate, series_stats

    reports = {m: evaluate(g, train_history=scale) for m, g in preds.groupby("model")}
    # evaluate classifies SKUs on the scale history; the test's classes are the frame's.
    for m, g in preds.groupby("model"):
        for cls, part in g.groupby("demand_class"):
            block = evaluate(part.drop(columns="demand_class"), train_history=scale)["overall"]
            reports[m]["by_segment"]["demand_class"][cls] = block
    ranking = sorted(reports, key=lambda n: reports[n]["overall"]["rmsse"])
    return bt.BacktestResult(
        preds,
        reports,
        [pd.Timestamp("2024-03-01")],
        28,
        "rmsse",
        ranking,
        scale_stats=series_stats(scale),
    )


def test_per_segment_fallback_where_the_backtest_says_so() -> None:
    result = _segment_result()
    chosen = choose(result)
    assert chosen.segments == {"intermittent": "tsb"}
    assert chosen.members == ("lgbm_tweedie/multi",)
    # The composition is scored like any model and beats what it is made of.
    assert chosen.name in result.reports and result.best == chosen.name
    assert result.score(chosen.name) < min(result.score("lgbm_tweedie/multi"), result.score("tsb"))
    # Without a margin's worth of gain, no fallback.
    assert choose(_segment_result(), margin=0.99).segments == {}


def test_sku_fallback_classifies_on_the_history() -> None:
    dates = pd.date_range("2024-01-01", periods=120)
    smooth = np.full(120, 5.0)
    sparse = np.zeros(120)
    sparse[::15] = 3.0
    history = pd.DataFrame(
        {
            "sku": np.repeat(["A", "B"], 120),
            "date": np.tile(dates, 2),
            "units": np.r_[smooth, sparse],
        }
    )
    sel = Selection("x", ("lgbm_tweedie/multi",), {"intermittent": "tsb"})
    classes = demand_classes(history)
    assert classes.to_dict() == {"A": "smooth", "B": "intermittent"}
    assert sku_fallback(sel, classes) == {"B": "tsb"}
    # Classes are per SKU: a history split by SKU gives the same classes part by part.
    parts = [demand_classes(history[history["sku"] == s]) for s in ("A", "B")]
    assert pd.concat(parts).to_dict() == classes.to_dict()


def test_serving_forecasts_the_shipped_composition() -> None:
    history = make_history(n_skus=4, n_days=200, seed=2)
    products = make_products(sorted(history["sku"].unique()))
    origin = history["date"].max() - pd.Timedelta(days=H)
    frame = hide_after(history, origin, origin + pd.Timedelta(days=H))
    train_part = history[history["date"] <= origin]
    model = Forecaster(model="lgbm_tweedie", strategy="direct", horizon=H, model_params=SMALL)
    model.fit(train_part, products)
    own = model.predict(frame, products, origin).sort_values(["sku", "date"])["mean"].to_numpy()
    ma = (
        Forecaster(model="moving_average", horizon=H)
        .fit(train_part, products)
        .predict(frame, products, origin)
        .sort_values(["sku", "date"])["mean"]
        .to_numpy()
    )
    tsb = (
        Forecaster(model="tsb", horizon=H)
        .fit(train_part, products)
        .predict(frame, products, origin)
        .sort_values(["sku", "date"])["mean"]
        .to_numpy()
    )
    cal = QuantileCalibrator().fit(own, own, np.tile(np.arange(1, H + 1), 4))
    shipped = ShippedForecast("ens", (model.name, "moving_average"), {"ITEM_1_S": "tsb"})
    bundle = SimpleNamespace(
        version="v",
        artifacts={"model": model, "cold_start": model, "calibration": cal, "selection": shipped},
    )
    fc = BundleForecaster(bundle)  # type: ignore[arg-type]
    assert fc.history_days >= 364  # baselines read their year
    assert fc.model_weight("ITEM_0_S") == 0.5 and fc.model_weight("ITEM_1_S") == 0.0
    got = fc.forecast_arrays(frame, products, origin, H, [0.5])
    expected = (own + ma) / 2
    fallback = got.sku == "ITEM_1_S"
    expected[fallback] = tsb[fallback]
    np.testing.assert_allclose(got.mean, expected, rtol=1e-6)


def _store(engine: Engine, history: pd.DataFrame) -> None:
    skus = sorted(history["sku"].unique())
    ingest_frames(engine, "products", pd.DataFrame({"sku": skus}), source="t:products")
    sales = history[["sku", "date", "units"]].assign(date=history["date"].dt.date)
    ingest_frames(engine, "sales", sales, source="t:sales")


def test_train_ships_seasonal_naive_over_a_losing_learned_model(
    engine: Engine, tmp_path: Path
) -> None:
    """`--models seasonal_naive,lgbm_poisson` used to ship lgbm_poisson at 1.32 vs 1.00."""
    _store(engine, _weekly(5, 160))
    options = TrainOptions(
        models=["seasonal_naive", "lgbm_poisson"],
        strategy="direct",
        horizon=H,
        folds=1,
        model_params={"lgbm_poisson": SMALL},
        cold_start_share=0.2,
    )
    outcome = train(engine, tmp_path, options)
    assert outcome.champion_model == "seasonal_naive"
    bundle = load_bundle(outcome.path, models_dir=tmp_path)
    assert bundle.manifest.params["selection"]["members"] == ["seasonal_naive"]
    assert "selection.joblib" in bundle.manifest.artifacts
    assert bundle.artifacts["selection"].members == ("seasonal_naive",)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_can_ship_and_serve(name: str) -> None:
    history = make_history(n_skus=3, n_days=120, seed=5)
    products = make_products(sorted(history["sku"].unique()))
    origin = history["date"].max() - pd.Timedelta(days=H)
    frame = hide_after(history, origin, origin + pd.Timedelta(days=H))
    model = Forecaster(model=name, horizon=H).fit(history[history["date"] <= origin], products)
    ref = model.predict(frame, products, origin).sort_values(["sku", "date"])["mean"].to_numpy()
    cal = QuantileCalibrator().fit(ref, ref, np.tile(np.arange(1, H + 1), 3))
    bundle = SimpleNamespace(
        version="v",
        artifacts={
            "model": model,
            "cold_start": model,
            "calibration": cal,
            "selection": ShippedForecast(name, (name,), {}),
        },
    )
    got = BundleForecaster(bundle).forecast_arrays(frame, products, origin, H, [0.5])  # type: ignore[arg-type]
    np.testing.assert_allclose(got.mean, ref)


def test_a_folds_forecast_by_pieces_of_skus_is_the_forecast_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fold's learned forecast runs a piece of whole SKUs at a time (bounded memory at M5
    scale): the same rows and values as the whole catalogue at once."""
    from tests.training.frames import make_history, make_products
    from training import backtest as B
    from training.forecaster import Forecaster
    from training.predict import hide_after

    history = make_history(5, 200, seed=2, offsets=[0, 0, 30, 0, 120])
    products = make_products(sorted(history["sku"].unique()))
    cut = history["date"].max() - pd.Timedelta(days=14)
    end = cut + pd.Timedelta(days=14)
    model = Forecaster(
        model="lgbm_tweedie",
        strategy="multi",
        horizon=14,
        bucket=7,
        model_params={"n_estimators": 20, "num_leaves": 7, "min_data_in_leaf": 5},
    ).fit(history[history["date"] <= cut], products)
    since = cut - pd.Timedelta(days=model.required_history)
    whole = model.predict(
        hide_after(history[history["date"] >= since], cut, end), products, cut, 14
    )
    monkeypatch.setattr(B, "FORECAST_PIECE_ROWS", 250)  # about one SKU a piece
    pieces = B._forecast_by_pieces(model, history, products, since, cut, end, 14)
    pd.testing.assert_frame_equal(pieces, whole)
