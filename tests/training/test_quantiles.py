"""Quantile calibration: held-out coverage, monotone quantiles, any level on request."""

from __future__ import annotations

import numpy as np
import pytest

from training.quantiles import NotCalibrated, QuantileCalibrator


def _counts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson demand with a noisy forecast of its rate, mostly intermittent."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.6, 3.0, size=n)
    horizon = rng.integers(1, 29, size=n)
    y = rng.poisson(rate).astype(float)
    yhat = rate * rng.uniform(0.8, 1.2, size=n) * (1 + 0.01 * horizon)
    return y, yhat, horizon


def test_band_covers_nominal_share_on_new_data() -> None:
    cal = QuantileCalibrator().fit(*_counts(20_000, 1))
    y, yhat, h = _counts(20_000, 2)
    q = cal.predict(yhat, h, [0.1, 0.5, 0.9])
    inside = np.mean((y >= q[:, 0]) & (y <= q[:, 2]))
    assert abs(inside - 0.8) < 0.03
    assert abs(np.mean(y < q[:, 0]) - 0.1) < 0.03
    assert abs(np.mean(y <= q[:, 2]) - 0.9) < 0.03


def test_uncalibrated_band_would_miss() -> None:
    """The level mapping matters: raw residual quantiles over-cover on count data."""
    cal = QuantileCalibrator().fit(*_counts(20_000, 1))
    y, yhat, h = _counts(20_000, 2)
    raw = cal._raw(yhat, h, np.array([0.1, 0.9]))
    inside_raw = np.mean((y >= raw[:, 0]) & (y <= raw[:, 1]))
    q = cal.predict(yhat, h, [0.1, 0.9])
    inside = np.mean((y >= q[:, 0]) & (y <= q[:, 1]))
    assert abs(inside - 0.8) < abs(inside_raw - 0.8)


def test_quantiles_monotone_nonnegative_any_levels() -> None:
    cal = QuantileCalibrator().fit(*_counts(5_000, 3))
    _, yhat, h = _counts(1_000, 4)
    levels = [0.975, 0.05, 0.5, 0.25, 0.75]
    q = cal.predict(yhat, h, levels)
    assert q.shape == (1_000, 5)
    assert (q >= 0).all()
    ordered = q[:, np.argsort(levels)]
    assert (np.diff(ordered, axis=1) >= -1e-9).all()


def test_wider_band_for_later_horizons_when_errors_grow() -> None:
    rng = np.random.default_rng(5)
    n = 30_000
    h = rng.integers(1, 29, size=n)
    yhat = np.full(n, 10.0)
    y = np.clip(yhat + rng.normal(0, 1 + h / 4), 0, None)
    cal = QuantileCalibrator().fit(y, yhat, h)
    q = cal.predict(np.array([10.0, 10.0]), np.array([1, 28]), [0.1, 0.9])
    assert (q[1, 1] - q[1, 0]) > 2 * (q[0, 1] - q[0, 0])


def test_errors() -> None:
    with pytest.raises(NotCalibrated):
        QuantileCalibrator().predict(np.ones(2), np.ones(2), [0.5])
    cal = QuantileCalibrator().fit(*_counts(1_000, 6))
    with pytest.raises(ValueError, match="strictly between"):
        cal.predict(np.ones(2), np.ones(2), [1.0])
    with pytest.raises(ValueError, match="no finite"):
        QuantileCalibrator().fit(np.array([np.nan]), np.array([1.0]), np.array([1]))


def test_a_level_does_not_depend_on_the_others_requested() -> None:
    cal = QuantileCalibrator().fit(*_counts(20_000, 7))
    _, yhat, h = _counts(2_000, 8)
    alone = cal.predict(yhat, h, [0.5])[:, 0]
    among = cal.predict(yhat, h, [0.1, 0.4, 0.45, 0.5, 0.9])[:, 3]
    np.testing.assert_array_equal(alone, among)


def test_remembered_quantiles_follow_a_refit_and_are_not_pickled() -> None:
    import pickle

    levels = [0.1, 0.5, 0.9]
    _, yhat, h = _counts(2_000, 9)
    cal = QuantileCalibrator().fit(*_counts(20_000, 1))
    first = cal.predict(yhat, h, levels)
    np.testing.assert_array_equal(cal.predict(yhat, h, levels), first)  # from the memo
    # Refit on errors twice as wide: the remembered quantiles of the first fit must not survive.
    y2, yhat2, h2 = _counts(20_000, 3)
    cal.fit(yhat2 + 2.0 * (y2 - yhat2), yhat2, h2)
    fresh = QuantileCalibrator().fit(yhat2 + 2.0 * (y2 - yhat2), yhat2, h2)
    np.testing.assert_array_equal(cal.predict(yhat, h, levels), fresh.predict(yhat, h, levels))
    assert not np.array_equal(cal.predict(yhat, h, levels), first)
    loaded = pickle.loads(pickle.dumps(cal))
    assert loaded._memo == {}
    np.testing.assert_array_equal(loaded.predict(yhat, h, levels), fresh.predict(yhat, h, levels))
