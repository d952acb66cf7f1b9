"""Live accuracy: a stored forecast run scored against the actuals its days now have.

A run made from ``as_of`` is scored on its SKU-days up to the last day with actuals, against
seasonal naive (``training.estimators.baselines.seasonal_naive``) forecast from the same history
on the same days. The metrics are those of the backtest (``training.metrics``): WAPE, RMSSE
(scaled per SKU by its one-step naive differences over the history up to ``as_of``), bias, MAE
and the share of actuals inside the run's P10..P90, per horizon day, per segment (category,
store, demand class of the history up to ``as_of``) and overall. Per target day it also keeps the
additive sums (absolute error, error, actuals, rows inside the interval) that windows of live
accuracy (the last 7 or 28 days, drift) add up over several runs.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from featurestore.accuracy import RunRows
from training.cleaning import day_numbers
from training.estimators.baselines import moving_average, seasonal_naive
from training.metrics import DEMAND_CLASSES, classify_demand, rmsse

FloatArray = npt.NDArray[np.float64]
SEGMENTS = ("category", "store", "demand_class")
LEVELS = ("overall", "horizon", *SEGMENTS)
METRICS = ("wape", "rmsse", "bias", "mae", "coverage")
_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass(frozen=True)
class Actuals:
    """Every SKU's daily units as a matrix (SKU x day), NaN where the day is not known."""

    skus: npt.NDArray[np.object_]  # sorted
    first_day: int  # day number (since 1970-01-01) of column 0
    units: FloatArray  # (n_skus, n_days)
    category: npt.NDArray[np.object_]
    store: npt.NDArray[np.object_]

    @classmethod
    def of(cls, history: pd.DataFrame, products: pd.DataFrame) -> Actuals:
        """From a dense history frame (sku, date, units) and the products (sku, category, store)."""
        codes, skus = pd.factorize(history["sku"], sort=True)
        days = day_numbers(history["date"].to_numpy())
        first = int(days.min()) if len(days) else 0
        width = int(days.max()) - first + 1 if len(days) else 0
        units = np.full((len(skus), width), np.nan)
        units[codes, days - first] = history["units"].to_numpy(dtype=np.float64, na_value=np.nan)
        attrs = products.set_index("sku").reindex(skus)
        return cls(
            skus=np.asarray(skus, dtype=object),
            first_day=first,
            units=units,
            category=attrs["category"].fillna("").astype(str).to_numpy(dtype=object),
            store=attrs["store"].fillna("").astype(str).to_numpy(dtype=object),
        )

    @property
    def last_day(self) -> int:
        return self.first_day + self.units.shape[1] - 1


_STATS_ROWS = 2_000  # SKUs per block of history_stats (bounds its temporary arrays)


def history_stats(
    units: FloatArray, cols: Sequence[int]
) -> dict[int, tuple[FloatArray, npt.NDArray[np.object_]]]:
    """Per column ``c`` of ``cols``: each row's M5 scale (``naive_scale``, power 2) and demand
    class (``demand_class``) of its history up to ``c`` inclusive, in one pass over the
    history for every column (each run's origin) instead of one pass per run."""
    wanted = sorted(set(int(c) for c in cols))
    n, width = units.shape
    sums = {c: np.zeros((6, n)) for c in wanted}
    for lo in range(0, n, _STATS_ROWS):
        u = units[lo : lo + _STATS_ROWS]
        valid = ~np.isnan(u)
        sold = valid & (u > 0)
        first = np.where(sold.any(axis=1), sold.argmax(axis=1), width)
        started = np.arange(width)[None, :] >= first[:, None]
        ok = np.zeros_like(valid)
        ok[:, 1:] = started[:, :-1] & valid[:, 1:] & valid[:, :-1]
        diff = np.zeros_like(u)
        diff[:, 1:] = np.where(ok[:, 1:], u[:, 1:] - u[:, :-1], 0.0)
        size = np.where(sold, u, 0.0)
        parts = (diff**2, ok, started & valid, sold, size, size**2)
        running = np.zeros((6, len(u)))
        prev = 0
        for c in wanted:
            stop = min(c + 1, width)
            if stop > prev:
                running += np.stack([p[:, prev:stop].sum(axis=1) for p in parts])
                prev = stop
            sums[c][:, lo : lo + len(u)] = running
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for c, (sq, n_diff, n_obs, n_sold, size_sum, size_sq) in sums.items():
            scale_sq = sq / n_diff
            adi = n_obs / n_sold
            mean_size = size_sum / n_sold
            cv2 = np.maximum(size_sq / n_sold - mean_size**2, 0.0) / mean_size**2
            adi[n_sold == 0] = np.nan
            cv2[n_sold == 0] = np.nan
            out[c] = (scale_sq, classify_demand(adi, cv2))
    return out


@dataclass
class RunScore:
    """One run's scores (rows for the accuracy table) and its per-day sums."""

    days: int  # target days of the run that have actuals
    scores: list[dict[str, Any]] = field(default_factory=list)
    per_day: list[dict[str, Any]] = field(default_factory=list)
    # Per SKU-day from ``detail_from`` on: absolute errors of the run, seasonal naive and the
    # 28-day moving average (what drift and the fallback decide per SKU from).
    detail: pd.DataFrame | None = None


def day_number(day: dt.date) -> int:
    return int((np.datetime64(day, "D") - _EPOCH).astype(np.int64))


def score_run(
    forecasts: RunRows,
    actuals: Actuals,
    *,
    as_of: dt.date,
    detail_from: dt.date | None = None,
    stats: tuple[FloatArray, npt.NDArray[np.object_]] | None = None,
) -> RunScore:
    """Score a run's rows (featurestore.accuracy.run_rows).

    Rows without an actual yet (after the last known day, or a SKU the store no longer has) are
    left out; a run with none scores nothing (``days == 0``). ``stats``: ``history_stats`` at
    the run's origin, when the caller computed them for many runs at once.
    """
    origin = day_number(as_of)
    col_origin = origin - actuals.first_day
    position = {s: i for i, s in enumerate(actuals.skus.tolist())}
    sku_idx = np.array([position.get(s, -1) for s in forecasts.sku.tolist()], dtype=np.int64)
    day = forecasts.day
    col = day - actuals.first_day
    known = (sku_idx >= 0) & (col >= 0) & (col < actuals.units.shape[1]) & (col_origin >= 0)
    y = np.full(len(day), np.nan)
    y[known] = actuals.units[sku_idx[known], col[known]]
    keep = known & ~np.isnan(y)
    if not keep.any():
        return RunScore(days=0)
    horizon_day = (day - origin).astype(np.int64)
    keep &= horizon_day >= 1
    sku_idx, col, y, horizon_day = sku_idx[keep], col[keep], y[keep], horizon_day[keep]
    yhat = forecasts.mean[keep]
    lo = None if forecasts.p10 is None else forecasts.p10[keep]
    hi = None if forecasts.p90 is None else forecasts.p90[keep]

    # What the store knew at as_of: the history that seasonal naive, the scales and the demand
    # classes come from (every run the same rule, whatever arrived later).
    past = actuals.units[:, : col_origin + 1]
    used = np.unique(sku_idx)
    horizon = int(horizon_day.max())
    naive_wide = seasonal_naive(past[used], horizon)
    slot = np.searchsorted(used, sku_idx)
    naive = naive_wide[slot, horizon_day - 1]
    if stats is None:
        stats = history_stats(actuals.units, [col_origin])[col_origin]
    scale_sq, classes = stats[0][used], stats[1][used]

    # Per level: each row's group code and the groups' names (codes, not strings, are sorted).
    per_sku = {
        "category": actuals.category,
        "store": actuals.store,
        "demand_class": np.full(len(actuals.skus), "", dtype=object),
    }
    per_sku["demand_class"][used] = classes
    labels: dict[str, tuple[npt.NDArray[np.int64], list[str]]] = {
        "horizon": (horizon_day, []),
    }
    for level, values_of_sku in per_sku.items():
        uniq, codes = np.unique(values_of_sku, return_inverse=True)
        labels[level] = (codes[sku_idx], [str(u) for u in uniq])
    days = int(np.unique(col).size)
    out = RunScore(days=days)
    out.scores.append(
        _block("overall", "", np.arange(len(y)), y, yhat, naive, lo, hi, slot, scale_sq)
    )
    for level in ("horizon", *SEGMENTS):
        codes, group_names = labels[level]
        values, inverse = np.unique(codes, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        splits = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(values)))[:-1])
        for value, idx in zip(values.tolist(), splits, strict=True):
            name = str(value) if level == "horizon" else group_names[value]
            out.scores.append(_block(level, name, idx, y, yhat, naive, lo, hi, slot, scale_sq))
    out.per_day = _per_day(col + actuals.first_day, y, yhat, naive, lo, hi)
    if detail_from is not None:
        near = col + actuals.first_day >= day_number(detail_from)
        if near.any():
            average = moving_average(past[used], horizon)[slot, horizon_day - 1]
            out.detail = pd.DataFrame(
                {
                    "sku": actuals.skus[sku_idx[near]],
                    "date": (col[near] + actuals.first_day + _EPOCH).astype("datetime64[D]"),
                    "abs_error": np.abs(yhat - y)[near],
                    "naive_abs_error": np.abs(naive - y)[near],
                    "average_abs_error": np.abs(average - y)[near],
                }
            )
    return out


def _clean(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _ratio(num: float, den: float) -> float | None:
    return _clean(num / den) if den else None


def _block(
    level: str,
    segment: str,
    idx: npt.NDArray[np.intp],
    y: FloatArray,
    yhat: FloatArray,
    naive: FloatArray,
    lo: FloatArray | None,
    hi: FloatArray | None,
    slot: npt.NDArray[np.intp],
    scale_sq: FloatArray,
) -> dict[str, Any]:
    a, f, n = y[idx], yhat[idx], naive[idx]
    total = float(np.sum(np.abs(a)))
    row: dict[str, Any] = {
        "level": level,
        "segment": segment,
        "rows": len(idx),
        "actual_units": float(np.sum(a)),
        "wape": _ratio(float(np.sum(np.abs(f - a))), total),
        "rmsse": _clean(rmsse(a, f, scale_sq=scale_sq, series=slot[idx]).value),
        "bias": _ratio(float(np.sum(f - a)), float(np.sum(a))),
        "mae": _clean(float(np.mean(np.abs(f - a)))),
        "coverage": None,
        "naive_wape": _ratio(float(np.sum(np.abs(n - a))), total),
        "naive_rmsse": _clean(rmsse(a, n, scale_sq=scale_sq, series=slot[idx]).value),
        "naive_bias": _ratio(float(np.sum(n - a)), float(np.sum(a))),
        "naive_mae": _clean(float(np.mean(np.abs(n - a)))),
    }
    if lo is not None and hi is not None:
        inside = (a >= lo[idx]) & (a <= hi[idx])
        row["coverage"] = _clean(float(np.mean(inside)))
    return row


def _per_day(
    day: npt.NDArray[np.int64],
    y: FloatArray,
    yhat: FloatArray,
    naive: FloatArray,
    lo: FloatArray | None,
    hi: FloatArray | None,
) -> list[dict[str, Any]]:
    values, inverse = np.unique(day, return_inverse=True)
    n = len(values)

    def total(w: FloatArray) -> FloatArray:
        return np.bincount(inverse, w, n).astype(np.float64)

    inside = np.zeros(len(y))
    with_interval = np.zeros(len(y))
    if lo is not None and hi is not None:
        inside = ((y >= lo) & (y <= hi)).astype(np.float64)
        with_interval = np.ones(len(y))
    sums = {
        "rows": np.bincount(inverse, minlength=n).astype(np.float64),
        "actual": total(y),
        "abs_error": total(np.abs(yhat - y)),
        "error": total(yhat - y),
        "naive_abs_error": total(np.abs(naive - y)),
        "naive_error": total(naive - y),
        "inside": total(inside),
        "interval_rows": total(with_interval),
    }
    dates = (values + _EPOCH).astype("datetime64[D]").astype(object)
    return [
        {
            "date": dates[i],
            **{
                k: (int(v[i]) if k in ("rows", "inside", "interval_rows") else float(v[i]))
                for k, v in sums.items()
            },
        }
        for i in range(n)
    ]


@dataclass(frozen=True)
class Window:
    """Live accuracy over a window of target days, summed over every run that forecast them."""

    days: int
    rows: int
    wape: float | None
    bias: float | None
    coverage: float | None
    naive_wape: float | None


def window_of(per_day: pd.DataFrame) -> Window:
    """Add up stored per-day sums (columns of ``RunScore.per_day``) into one window's figures."""
    if per_day.empty:
        return Window(0, 0, None, None, None, None)
    s = per_day[
        ["rows", "actual", "abs_error", "error", "naive_abs_error", "inside", "interval_rows"]
    ].sum()
    return Window(
        days=int(per_day["date"].nunique()),
        rows=int(s["rows"]),
        wape=_ratio(float(s["abs_error"]), float(s["actual"])),
        bias=_ratio(float(s["error"]), float(s["actual"])),
        coverage=_ratio(float(s["inside"]), float(s["interval_rows"])),
        naive_wape=_ratio(float(s["naive_abs_error"]), float(s["actual"])),
    )


__all__ = [
    "DEMAND_CLASSES",
    "LEVELS",
    "METRICS",
    "SEGMENTS",
    "Actuals",
    "RunScore",
    "Window",
    "day_number",
    "history_stats",
    "score_run",
    "window_of",
]
