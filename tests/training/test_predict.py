"""The one predict path: a new model family works end to end, and only estimators touch boosters."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.training.frames import make_history, make_products
from training import estimators as E
from training.forecaster import Forecaster
from training.options import TrainOptions
from training.pipeline import _candidates
from training.predict import BundleForecaster, hide_after
from training.quantiles import QuantileCalibrator

ROOT = Path(__file__).resolve().parents[2]
H = 14


class WeekdayMean(E.Estimator):
    """A family written as a new engineer would: one class, registered under one name."""

    name = "weekday_mean"

    def __init__(self, *, shrink: float = 0.0) -> None:
        self.shrink = shrink

    def _fit(self, X: np.ndarray, y: Any, feature_names: list[str], *_: Any) -> None:
        self.mean_ = float(np.mean(y)) * (1.0 - self.shrink)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.full(len(X), self.mean_)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(E.REGISTRY, "weekday_mean", WeekdayMean)


def test_a_new_family_trains_and_forecasts_with_no_other_change(registered: None) -> None:
    history = make_history(n_skus=4, n_days=200, seed=1)
    products = make_products(sorted(history["sku"].unique()))
    origin = history["date"].max() - pd.Timedelta(days=H)
    train = history[history["date"] <= origin].reset_index(drop=True)
    frame = hide_after(history, origin, origin + pd.Timedelta(days=H))

    (model,) = _candidates(TrainOptions(models=["weekday_mean"], horizon=H, n_estimators=10))
    assert model.model_params == {}  # no tree budget for this family
    assert model.link == "identity" and not model.gives_contributions
    model.fit(train, products)
    pred = model.predict(frame, products, origin)
    assert len(pred) == 4 * H
    means = {s.estimator.mean_ for s in model.stages_}  # type: ignore[attr-defined]
    assert len(model.stages_) == 1 and set(pred["mean"]) == means

    mean = pred["mean"].to_numpy()
    cal = QuantileCalibrator().fit(mean, mean, pred["horizon"].to_numpy())
    served = BundleForecaster(
        SimpleNamespace(artifacts={"model": model, "cold_start": model, "calibration": cal})  # type: ignore[arg-type]
    ).forecast_arrays(frame, products, origin, H, [0.5])
    np.testing.assert_array_equal(served.mean, pred["mean"].to_numpy())


def test_pipeline_rejects_an_unknown_model_naming_the_known_ones() -> None:
    with pytest.raises(
        RuntimeError, match=r"choose from seasonal_naive, moving_average, .*tsb_dow, linear"
    ):
        _candidates(TrainOptions(models=["nope"]))


def test_only_estimators_touch_a_library_booster() -> None:
    """Outside training/estimators, no product code reads ``.booster_`` (one predict path)."""
    offenders = []
    for package in ("app", "training", "featurestore"):
        for path in (ROOT / package).rglob("*.py"):
            if path.is_relative_to(ROOT / "training" / "estimators"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "booster_":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_forecaster_and_bundle_share_one_path_for_baselines() -> None:
    history = make_history(n_skus=3, n_days=120, seed=2)
    products = make_products(sorted(history["sku"].unique()))
    origin = history["date"].max() - pd.Timedelta(days=H)
    frame = hide_after(history, origin, origin + pd.Timedelta(days=H))
    model = Forecaster(model="moving_average", horizon=H).fit(
        history[history["date"] <= origin], products
    )
    ref = model.predict(frame, products, origin)
    mean = ref["mean"].to_numpy()
    cal = QuantileCalibrator().fit(mean, mean, ref["horizon"].to_numpy())
    got = BundleForecaster(
        SimpleNamespace(artifacts={"model": model, "cold_start": model, "calibration": cal})  # type: ignore[arg-type]
    ).forecast_arrays(frame, products, origin, H, [0.5])
    ref = ref.sort_values(["sku", "date"], kind="stable")
    np.testing.assert_array_equal(got.mean, ref["mean"].to_numpy())


def test_baselines_read_the_units_matrix_pivot_would_give() -> None:
    """Baselines read a (SKU x date) units matrix: scattered by the frame's runs when it is in
    (sku, date) order (as readers give it), else pivoted; both are pivot's matrix, with a SKU
    launched late and a day missing for one SKU left NaN."""
    from training.predict import _wide_units

    frame = make_history(n_skus=3, n_days=40)
    late = frame["sku"] == frame["sku"].iloc[-1]
    frame = frame[~late | (frame["date"] > frame["date"].min() + pd.Timedelta(days=10))]
    frame = frame.drop(index=frame.index[5]).reset_index(drop=True)
    frame = frame.sort_values(["sku", "date"], ignore_index=True)
    wide = frame.pivot(index="sku", columns="date", values="units")
    for data in (frame, frame.sample(frac=1.0, random_state=2)):
        skus, matrix = _wide_units(data)
        assert list(skus) == list(wide.index)
        np.testing.assert_array_equal(matrix, wide.to_numpy(dtype=np.float64))
    assert np.isnan(matrix).sum() == 11 + 1  # the late SKU's first 11 days, the dropped day


def test_baselines_forecasting_from_one_frame_share_its_units_matrix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backtest fold forecasts every baseline from one frame: its units matrix is made once
    (per frame and origin), and each baseline's forecast is the one from a fresh matrix."""
    from training import predict as P

    frame = make_history(n_skus=3, n_days=60)
    products = make_products(sorted(frame["sku"].unique()))
    origin = frame["date"].max() - pd.Timedelta(days=7)
    hidden = hide_after(frame, origin, frame["date"].max())
    fresh = {
        name: Forecaster(model=name, horizon=7)
        .fit(hidden, products)
        .predict(hidden.copy(), products, origin)
        for name in ("seasonal_naive", "moving_average", "tsb")
    }
    made: list[int] = []
    real = P._wide_units

    def counted(past: pd.DataFrame) -> Any:
        made.append(len(past))
        return real(past)

    monkeypatch.setattr(P, "_wide_units", counted)
    for name, expected in fresh.items():
        got = (
            Forecaster(model=name, horizon=7)
            .fit(hidden, products)
            .predict(hidden, products, origin)
        )
        pd.testing.assert_frame_equal(got, expected)
    assert len(made) == 1
    Forecaster(model="tsb", horizon=7).fit(hidden, products).predict(
        hidden, products, origin - pd.Timedelta(days=1)
    )
    assert len(made) == 2  # another origin: another matrix
