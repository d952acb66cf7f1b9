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
from training.predict import Forecasts

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


def window_forecasts(
    sku: npt.NDArray[np.object_],
    day: npt.NDArray[np.int64],
    units: FloatArray,
    as_of_day: int,
    levels: list[float],
    baseline: str,
) -> Forecasts:
    """A baseline's forecasts from a serving window's rows (grouped by SKU, consecutive days):
    each SKU's days after ``as_of_day`` in the window are forecast from its days up to it."""
    skus, start = np.unique(sku, return_index=True)
    order = np.argsort(start)
    skus, start = skus[order], start[order]
    bounds = list(zip(start.tolist(), [*start[1:].tolist(), len(sku)], strict=True))
    past = [units[a:b][day[a:b] <= as_of_day] for a, b in bounds]
    ahead = [day[a:b][day[a:b] > as_of_day] for a, b in bounds]
    past_len = max((len(p) for p in past), default=0)
    horizon = max((int(d.max()) - as_of_day for d in ahead if len(d)), default=0)
    out_sku, out_day, out_step, out_mean, out_q = [], [], [], [], []
    if horizon and past_len:
        hist = np.full((len(skus), past_len), np.nan)
        for i, seen in enumerate(past):
            if len(seen):
                hist[i, past_len - len(seen) :] = seen
        mean, q = baseline_forecast(hist, horizon, levels, baseline)
        for i, days in enumerate(ahead):
            steps = (days - as_of_day).astype(np.int64)
            out_sku.append(np.full(len(days), skus[i], dtype=object))
            out_day.append(days.astype(np.int64))
            out_step.append(steps.astype(np.int16))
            out_mean.append(mean[i, steps - 1])
            out_q.append(q[i, steps - 1, :])
    cat = np.concatenate
    return Forecasts(
        sku=cat(out_sku) if out_sku else np.empty(0, dtype=object),
        day=cat(out_day) if out_day else np.empty(0, dtype=np.int64),
        horizon=cat(out_step) if out_step else np.empty(0, dtype=np.int16),
        mean=cat(out_mean) if out_mean else np.empty(0),
        quantiles=cat(out_q) if out_q else np.empty((0, len(levels))),
        cold_start=np.zeros(sum(len(d) for d in out_day), dtype=bool),
        levels=list(levels),
    )
