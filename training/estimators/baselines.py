"""Baselines that need no features: they forecast straight from the history matrix."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.estimators.base import FloatArray


def _history(history_units: np.ndarray) -> FloatArray:
    h = np.asarray(history_units, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"history must be 2-D (n_series, n_days), got shape {h.shape}")
    return h


def _row_mean(h: FloatArray) -> FloatArray:
    seen = ~np.isnan(h)
    count = seen.sum(axis=1)
    total = np.where(seen, h, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.zeros(h.shape[0]), where=count > 0)


def seasonal_naive(history_units: np.ndarray, horizon: int, season: int = 7) -> FloatArray:
    """Repeat the last observed season: day T+h gets the units of day T+h-k*season (latest one).

    history_units is (n_series, n_days) with the cut-off as the last column; NaN marks days not
    observed (series that started late). A weekday never observed takes the series' mean, and
    a series with no observed day forecasts 0.
    """
    h = _history(history_units)
    if horizon < 1 or season < 1:
        raise ValueError("horizon and season must be positive")
    n_series, n_days = h.shape
    n_weeks = -(-n_days // season)
    padded = np.full((n_series, n_weeks * season), np.nan)
    padded[:, n_weeks * season - n_days :] = h
    weeks = padded.reshape(n_series, n_weeks, season)
    # The latest non-NaN value per season position: index of the last observed week.
    seen = ~np.isnan(weeks)
    last = n_weeks - 1 - np.argmax(seen[:, ::-1, :], axis=1)
    profile = np.take_along_axis(weeks, last[:, None, :], axis=1)[:, 0, :]
    profile = np.where(seen.any(axis=1), profile, _row_mean(h)[:, None])
    return profile[:, np.arange(horizon) % season].astype(np.float64)


def moving_average(history_units: np.ndarray, horizon: int, window: int = 28) -> FloatArray:
    """Flat forecast: the mean of the observed days among the last `window` (0 if none)."""
    h = _history(history_units)
    if horizon < 1 or window < 1:
        raise ValueError("horizon and window must be positive")
    mean = _row_mean(h[:, -window:])
    return np.repeat(mean[:, None], horizon, axis=1)


BASELINES: dict[str, Callable[[np.ndarray, int], FloatArray]] = {
    "seasonal_naive": seasonal_naive,
    "moving_average": moving_average,
}
