"""Metrics against hand-computed examples and independent references (sklearn, literal M5)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_pinball_loss, mean_squared_error

from training import metrics as M

# --- point metrics ----------------------------------------------------------------------------


def test_point_metrics_by_hand() -> None:
    y = [1.0, 2.0, 3.0, 0.0]
    yhat = [2.0, 2.0, 1.0, 3.0]  # errors 1, 0, -2, 3
    assert M.mse(y, yhat) == pytest.approx(14 / 4)
    assert M.rmse(y, yhat) == pytest.approx(math.sqrt(14 / 4))
    assert M.mae(y, yhat) == pytest.approx(6 / 4)
    assert M.wape(y, yhat) == pytest.approx(6 / 6)
    assert M.bias(y, yhat) == pytest.approx(2 / 6)
    assert M.bias(y, [0.0, 1.0, 2.0, 0.0]) == pytest.approx(-3 / 6)  # under-forecast is negative


def test_point_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.poisson(3.0, 500).astype(float)
    yhat = rng.gamma(2.0, 1.5, 500)
    assert M.mse(y, yhat) == pytest.approx(mean_squared_error(y, yhat))
    assert M.rmse(y, yhat) == pytest.approx(math.sqrt(mean_squared_error(y, yhat)))
    assert M.mae(y, yhat) == pytest.approx(mean_absolute_error(y, yhat))
    assert M.wape(y, yhat) == pytest.approx(mean_absolute_error(y, yhat) / y.mean())
    for q in (0.1, 0.5, 0.9):
        assert M.pinball(y, yhat, q) == pytest.approx(mean_pinball_loss(y, yhat, alpha=q))


def test_undefined_ratios_are_nan_and_shapes_checked() -> None:
    assert math.isnan(M.wape([0.0, 0.0], [1.0, 0.0]))
    assert math.isnan(M.bias([0.0], [1.0]))
    with pytest.raises(ValueError, match="shape"):
        M.mse([1.0, 2.0], [1.0])


def test_pinball_and_coverage_by_hand() -> None:
    assert M.pinball([10.0], [8.0], 0.9) == pytest.approx(0.9 * 2)
    assert M.pinball([10.0], [12.0], 0.9) == pytest.approx(0.1 * 2)
    assert M.pinball([10.0, 10.0], [8.0, 12.0], 0.5) == pytest.approx(M.mae([10, 10], [8, 12]) / 2)
    with pytest.raises(ValueError):
        M.pinball([1.0], [1.0], 1.0)
    y = [1.0, 5.0, 3.0, 9.0]
    assert M.coverage(y, [0, 0, 3, 0], [2, 4, 3, 10]) == pytest.approx(3 / 4)  # bounds inclusive


# --- M5 scaling -------------------------------------------------------------------------------


def m5_rmsse_literal(train: list[float], actual: list[float], forecast: list[float]) -> float:
    """RMSSE exactly as written in the M5 guidelines, trimming leading zeros first."""
    first = next(i for i, v in enumerate(train) if v != 0)
    t = train[first:]
    n, h = len(t), len(actual)
    denom = sum((t[i] - t[i - 1]) ** 2 for i in range(1, n)) / (n - 1)
    num = sum((actual[i] - forecast[i]) ** 2 for i in range(h)) / h
    return math.sqrt(num / denom)


def m5_mase_literal(train: list[float], actual: list[float], forecast: list[float]) -> float:
    """MASE with the same M5 scaling, absolute instead of squared."""
    first = next(i for i, v in enumerate(train) if v != 0)
    t = train[first:]
    n, h = len(t), len(actual)
    denom = sum(abs(t[i] - t[i - 1]) for i in range(1, n)) / (n - 1)
    return sum(abs(actual[i] - forecast[i]) for i in range(h)) / h / denom


TRAIN: list[list[float]] = [
    [0, 0, 3, 1, 0, 4, 2, 2, 0, 5],
    [1, 2, 3, 2, 1, 2, 3, 4, 3, 2],
    [0, 0, 0, 0, 0, 0, 7, 0, 0, 1],
]
ACTUAL: list[list[float]] = [[2, 0, 1, 3], [3, 3, 2, 1], [0, 0, 2, 0]]
FORECAST: list[list[float]] = [[1.5, 1.0, 1.0, 2.0], [2.5, 2.5, 2.5, 2.5], [0.3, 0.3, 0.3, 0.3]]


def test_rmsse_and_mase_match_literal_m5() -> None:
    scale_sq = M.naive_scale(np.array(TRAIN, dtype=float), power=2)
    scale_abs = M.naive_scale(np.array(TRAIN, dtype=float), power=1)
    expected = [m5_rmsse_literal(*args) for args in zip(TRAIN, ACTUAL, FORECAST, strict=True)]
    got = M.rmsse(ACTUAL, FORECAST, scale_sq=scale_sq)
    assert got.value == pytest.approx(np.mean(expected))
    assert (got.n_series, got.n_excluded) == (3, 0)

    weights = np.array([3.0, 1.0, 0.0])
    weighted = M.rmsse(ACTUAL, FORECAST, scale_sq=scale_sq, weights=weights)
    assert weighted.value == pytest.approx((3 * expected[0] + expected[1]) / 4)

    expected_mase = [m5_mase_literal(*args) for args in zip(TRAIN, ACTUAL, FORECAST, strict=True)]
    assert M.mase(ACTUAL, FORECAST, scale_abs=scale_abs).value == pytest.approx(
        np.mean(expected_mase)
    )


def test_long_form_with_codes_matches_wide_form() -> None:
    scale_sq = M.naive_scale(np.array(TRAIN, dtype=float))
    wide = M.rmsse(ACTUAL, FORECAST, scale_sq=scale_sq)
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(3), 4)
    order = rng.permutation(12)  # row order must not matter
    y = np.array(ACTUAL, dtype=float).ravel()[order]
    yhat = np.array(FORECAST, dtype=float).ravel()[order]
    long = M.rmsse(y, yhat, scale_sq=scale_sq, series=codes[order])
    assert long.value == pytest.approx(wide.value)


def test_scale_starts_at_first_sale_and_ignores_nan() -> None:
    hist = np.array(
        [
            [np.nan, np.nan, 0.0, 1.0, 3.0],  # late start: diffs from the first sale -> [2]
            [0.0, 0.0, 0.0, 1.0, 3.0],  # leading zeros are trimmed the same way
            [0.0, 2.0, 2.0, 2.0, 2.0],  # constant after the first sale: scale 0
            [0.0, 0.0, 0.0, 0.0, 0.0],  # never sold: undefined
        ]
    )
    scale = M.naive_scale(hist)
    assert scale[:3] == pytest.approx([4.0, 4.0, 0.0])
    assert math.isnan(scale[3])
    assert M.naive_scale(hist, power=1)[:2] == pytest.approx([2.0, 2.0])

    score = M.rmsse(np.ones((4, 2)), np.zeros((4, 2)), scale_sq=scale)
    assert score.n_series == 2 and score.n_excluded == 2
    assert score.value == pytest.approx(math.sqrt(1 / 4))


# --- demand classes ---------------------------------------------------------------------------


def test_demand_class_by_hand() -> None:
    hist = np.array(
        [
            [5, 6, 5, 6, 5, 6, 5, 6, 5, 6, 5, 6],  # every day, stable sizes
            [0, 0, 5, 0, 0, 5, 0, 0, 5, 0, 0, 5],  # ADI 10/4 = 2.5, CV² 0
            [1, 10, 1, 10, 1, 10, 1, 10, 1, 10, 1, 10],  # ADI 1, CV² 20.25/30.25 = 0.67
            [0, 1, 0, 0, 10, 0, 0, 1, 0, 0, 10, 0],  # ADI 11/4 = 2.75, CV² 0.67
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=float,
    )
    assert list(M.demand_class(hist)) == ["smooth", "intermittent", "erratic", "lumpy", "no_demand"]
    stats = M.series_stats(
        pd.DataFrame(
            {
                "sku": np.repeat(["a", "b", "c", "d", "e"], 12),
                "date": np.tile(pd.date_range("2024-01-01", periods=12), 5),
                "units": hist.ravel(),
            }
        )
    )
    assert stats.loc["b", "adi"] == pytest.approx(10 / 4)
    assert stats.loc["c", "cv2"] == pytest.approx(20.25 / 30.25)
    assert stats["scale_sq"].to_numpy() == pytest.approx(M.naive_scale(hist), nan_ok=True)


def test_series_stats_sorts_by_date_within_sku() -> None:
    dates = pd.date_range("2024-01-01", periods=4)
    frame = pd.DataFrame(
        {"sku": ["x"] * 4, "date": dates[::-1], "units": [3.0, 1.0, 2.0, 0.0]}
    )  # chronological: 0, 2, 1, 3 -> diffs 2 (from the first sale): -1, 2
    stats = M.series_stats(frame)
    assert stats.loc["x", "scale_sq"] == pytest.approx((1 + 4) / 2)


# --- evaluate and value added -----------------------------------------------------------------


@pytest.fixture
def backtest() -> tuple[pd.DataFrame, pd.DataFrame]:
    skus = ["s1", "s2", "s3"]
    hist = pd.DataFrame(
        {
            "sku": np.repeat(skus, 10),
            "date": np.tile(pd.date_range("2024-01-01", periods=10), 3),
            "units": np.array(TRAIN, dtype=float).ravel(),
        }
    )
    rows = []
    for i, sku in enumerate(skus):
        for h in range(1, 5):
            rows.append(
                {
                    "sku": sku,
                    "date": pd.Timestamp("2024-01-10") + pd.Timedelta(days=h),
                    "horizon": h,
                    "y": ACTUAL[i][h - 1],
                    "yhat": FORECAST[i][h - 1],
                    "category": "food" if i < 2 else "toys",
                    "store": "CA_1",
                }
            )
    return pd.DataFrame(rows), hist


def test_evaluate_overall_segments_and_horizons(
    backtest: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    frame, hist = backtest
    report = M.evaluate(frame, train_history=hist)
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN anywhere

    overall = report["overall"]
    assert overall["mse"] == pytest.approx(M.mse(frame["y"], frame["yhat"]))
    assert overall["wape"] == pytest.approx(M.wape(frame["y"], frame["yhat"]))
    expected = [m5_rmsse_literal(*args) for args in zip(TRAIN, ACTUAL, FORECAST, strict=True)]
    assert overall["rmsse"] == pytest.approx(np.mean(expected))
    assert overall["n"] == 12 and overall["n_series"] == 3

    food = report["by_segment"]["category"]["food"]
    sub = frame[frame["category"] == "food"]
    assert food["mae"] == pytest.approx(M.mae(sub["y"], sub["yhat"]))
    assert food["rmsse"] == pytest.approx(np.mean(expected[:2]))
    assert report["by_segment"]["category"]["toys"]["rmsse"] == pytest.approx(expected[2])
    assert set(report["by_segment"]["store"]) == {"CA_1"}
    classes = M.demand_class(np.array(TRAIN, dtype=float))
    assert set(report["by_segment"]["demand_class"]) == set(classes)

    assert sorted(report["by_horizon"]) == [1, 2, 3, 4]
    h2 = frame[frame["horizon"] == 2]
    assert report["by_horizon"][2]["bias"] == pytest.approx(M.bias(h2["y"], h2["yhat"]))


def test_wrmsse_weighs_each_series_by_its_recent_units(
    backtest: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    frame, hist = backtest
    overall = M.evaluate(frame, train_history=hist)["overall"]
    expected = np.array(
        [m5_rmsse_literal(*args) for args in zip(TRAIN, ACTUAL, FORECAST, strict=True)]
    )
    weights = np.array(TRAIN, dtype=float).sum(axis=1)  # 10 days: all inside the 28-day window
    assert weights.std() > 0 and expected.std() > 0  # the weighting can move the mean
    assert overall["wrmsse"] == pytest.approx(np.sum(weights * expected) / weights.sum())
    assert overall["wrmsse"] != pytest.approx(overall["rmsse"])
    # Only the overall block carries it (what selection ranks by).
    assert "wrmsse" not in next(iter(M.evaluate(frame, train_history=hist)["by_horizon"].values()))


def test_recent_units_are_the_last_28_days_up_to_until() -> None:
    days = pd.date_range("2024-01-01", periods=90)
    early = np.where(np.arange(90) < 40, 5.0, 0.0)  # stopped selling on day 40
    late = np.where(np.arange(90) >= 60, 2.0, 0.0)
    late[70] = np.nan  # an unknown day counts nothing
    hist = pd.DataFrame(
        {"sku": np.repeat(["a", "b"], 90), "date": np.tile(days, 2), "units": np.r_[early, late]}
    )
    for frame in (hist, hist.sample(frac=1.0, random_state=2)):  # in order, and not
        stats = M.series_stats(frame)
        assert stats.loc["a", "recent_units"] == 0.0
        assert stats.loc["b", "recent_units"] == 2.0 * 27  # days 62..89 less the unknown 70
        cut = M.series_stats(frame, until=days[45])
        assert cut.loc["a", "recent_units"] == 5.0 * 22  # days 18..45, sold on 18..39
        assert cut.loc["b", "recent_units"] == 0.0


def test_evaluate_segments_keep_whole_names_beside_a_missing_one(
    backtest: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    """A SKU without a category is reported under "nan" and the others under their whole names
    (a text array of the rows shrank every label to one character once a value was missing)."""
    frame, hist = backtest
    frame = frame.assign(category=frame["category"].where(frame["sku"] != frame["sku"].iloc[-1]))
    report = M.evaluate(frame, train_history=hist)
    assert sorted(report["by_segment"]["category"]) == ["food", "nan"]
    sub = frame[frame["category"] == "food"]
    assert report["by_segment"]["category"]["food"]["n"] == len(sub)


def test_evaluate_unknown_sku_is_excluded_and_counted(
    backtest: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    frame, hist = backtest
    extra = frame.iloc[:2].assign(sku="new")
    report = M.evaluate(pd.concat([frame, extra]), train_history=hist, segments=("demand_class",))
    assert report["overall"]["n_excluded_series"] == 1
    assert report["overall"]["n_scaled_series"] == 3
    assert "no_demand" in report["by_segment"]["demand_class"]
    assert report["by_segment"]["demand_class"]["no_demand"]["rmsse"] is None


def test_evaluate_rejects_bad_input(backtest: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    frame, hist = backtest
    with pytest.raises(ValueError, match="segment"):
        M.evaluate(frame, train_history=hist, segments=("brand",))
    with pytest.raises(ValueError, match="missing"):
        M.evaluate(frame.assign(yhat=np.nan), train_history=hist)


def test_value_added(backtest: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    assert M.value_added({"rmsse": 0.8, "wape": 0.5}, {"rmsse": 1.0, "wape": 0.4}) == {
        "rmsse": pytest.approx(0.2),
        "wape": pytest.approx(-0.25),
    }
    assert M.value_added({"rmsse": None}, {"rmsse": 1.0}, ["rmsse"]) == {"rmsse": None}
    frame, hist = backtest
    model = M.evaluate(frame, train_history=hist)
    naive = M.evaluate(frame.assign(yhat=frame["yhat"] * 2), train_history=hist)
    added = M.value_added_report(model, naive)
    assert added["overall"]["wape"] == pytest.approx(
        1 - model["overall"]["wape"] / naive["overall"]["wape"]
    )
    assert set(added["by_horizon"]) == {1, 2, 3, 4}
    assert added["by_segment"]["category"]["toys"]["rmsse"] == pytest.approx(
        1
        - model["by_segment"]["category"]["toys"]["rmsse"]
        / naive["by_segment"]["category"]["toys"]["rmsse"]
    )


@pytest.mark.parametrize("chunk", [10, 4_000_000])
def test_series_stats_of_a_subset_in_place_equal_the_copy(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """series_stats(until=, known_only=) reads the rows in place, a piece of whole SKUs at a
    time, and gives the statistics of the copied subset; SKUs without such rows are absent."""
    from tests.training.frames import make_history

    monkeypatch.setattr(M, "STATS_CHUNK_ROWS", chunk)
    history = make_history(4, 60, seed=3, offsets=[0, 5, 30, 50])
    history.loc[history.index[::7], "units"] = np.nan
    cut = history["date"].min() + pd.Timedelta(days=40)
    cases = {
        "until": ({"until": cut}, history[history["date"] <= cut]),
        "known": ({"known_only": True}, history[history["units"].notna()]),
        "all": ({}, history),
    }
    for kw, copy in cases.values():
        new = M.series_stats(history, **kw)
        old = M.series_stats(copy[["sku", "date", "units"]].sample(frac=1.0, random_state=1))
        pd.testing.assert_frame_equal(new, old, check_index_type=False)
    assert len(M.series_stats(history, until=cut)) == 3  # the SKU launched on day 50 is absent
