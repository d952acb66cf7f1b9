"""The safe fallback: which SKUs the champion fails on, and the baseline served for them.

``failing`` reads per SKU-day absolute errors of the live runs (training.accuracy's detail):
the champion fails when, on each of the last ``k`` days with actuals, its total error is worse
than seasonal naive's; the SKUs it fails on are those whose error over those days is worse than
seasonal naive's, all of them once they are ``all_share`` of the SKUs. The baseline served is
the one of seasonal naive and the 28-day moving average with the lower error on those SKUs.

``baseline_forecast`` forecasts from the units history like the baselines of the backtest,
with quantiles from the baseline's own empirical errors over the history (one-season-ago errors
for seasonal naive, the spread of the last 28 days for the moving average), never below 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.estimators.baselines import BASELINES

FloatArray = npt.NDArray[np.float64]
FALLBACK_BASELINES = ("seasonal_naive", "moving_average")
_ERROR_COLUMN = {"seasonal_naive": "naive_abs_error", "moving_average": "average_abs_error"}
_SEASON = 7
_WINDOW = 28


@dataclass(frozen=True)
class Verdict:
    """Whether the champion fails, on which SKUs (None: all), with which baseline, and why."""

    fails: bool
    days: list[str]  # the days judged (ISO), oldest first
    worse_days: int  # of those, days the champion's error was worse than seasonal naive's
    skus: list[str] | None  # failing SKUs; None means every SKU
    baseline: str
    champion_error: float
    naive_error: float


def failing(detail: pd.DataFrame, k: int, all_share: float) -> Verdict:
    """The verdict over the last ``k`` days of ``detail`` (sku, date, abs errors)."""
    if detail.empty:
        return Verdict(False, [], 0, [], "seasonal_naive", 0.0, 0.0)
    days = sorted(detail["date"].unique())[-k:]
    recent = detail[detail["date"].isin(days)]
    daily = recent.groupby("date")[["abs_error", "naive_abs_error"]].sum()
    worse = int((daily["abs_error"] > daily["naive_abs_error"]).sum())
    per_sku = recent.groupby("sku")[["abs_error", *_ERROR_COLUMN.values()]].sum()
    bad = per_sku[per_sku["abs_error"] > per_sku["naive_abs_error"]]
    fails = len(days) >= k and worse == len(days)
    everyone = len(per_sku) > 0 and len(bad) >= all_share * len(per_sku)
    judged = per_sku if everyone else bad
    baseline = min(FALLBACK_BASELINES, key=lambda b: float(judged[_ERROR_COLUMN[b]].sum()))
    return Verdict(
        fails=fails,
        days=[str(pd.Timestamp(d).date()) for d in days],
        worse_days=worse,
        skus=None if everyone else sorted(str(s) for s in bad.index),
        baseline=baseline,
        champion_error=float(daily["abs_error"].sum()),
        naive_error=float(daily["naive_abs_error"].sum()),
    )


def baseline_forecast(
    units: FloatArray, horizon: int, levels: list[float], baseline: str
) -> tuple[FloatArray, FloatArray]:
    """Mean (n, horizon) and quantiles (n, horizon, levels) of a baseline from (n, days) units."""
    if baseline not in FALLBACK_BASELINES:
        raise ValueError(f"unknown fallback baseline {baseline!r}")
    h = np.asarray(units, dtype=np.float64)
    mean = BASELINES[baseline](h, horizon)
    if baseline == "seasonal_naive":
        errors = h[:, _SEASON:] - h[:, :-_SEASON] if h.shape[1] > _SEASON else h[:, :0]
        spread = _quantiles(errors, levels)
        q = mean[:, :, None] + spread[:, None, :]
    else:
        last = h[:, -_WINDOW:]
        q = np.repeat(_quantiles(last, levels)[:, None, :], horizon, axis=1)
    return mean, np.maximum(q, 0.0)


def _quantiles(values: FloatArray, levels: list[float]) -> FloatArray:
    """Per row, the empirical quantiles of its observed values (0 where it has none)."""
    out = np.zeros((values.shape[0], len(levels)))
    seen = ~np.isnan(values)
    rows = np.flatnonzero(seen.any(axis=1)) if values.size else np.empty(0, dtype=np.int64)
    for i in rows:
        out[i] = np.quantile(values[i, seen[i]], levels)
    return out
