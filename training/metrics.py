"""Forecast accuracy: point and quantile metrics, M5 scaling, demand classes and backtest reports.

Every metric is a plain vectorised numpy function. Scaled metrics (RMSSE, MASE) follow M5: the
scale of a series is the mean squared (RMSSE) or absolute (MASE) one-step naive difference over
its *training* history, counted from its first non-zero sale; the metric is the mean over series
(optionally weighted) and series whose scale is zero or undefined are left out and counted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.cleaning import run_starts

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

# Syntetos-Boylan cut-offs between smooth, intermittent, erratic and lumpy demand.
ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49
DEMAND_CLASSES = ("smooth", "intermittent", "erratic", "lumpy", "no_demand")

POINT_METRICS = ("mse", "rmse", "mae", "wape", "bias", "rmsse", "mase")
# WRMSSE weighs each series by its units over this many days up to the last day of its training
# history (M5 weighs by revenue over the same 28 days; units need no price file).
WEIGHT_DAYS = 28


class ScaledScore(NamedTuple):
    """A per-series scaled metric: its mean, the series it covers and the series left out."""

    value: float
    n_series: int
    n_excluded: int


def _pair(y: ArrayLike, yhat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    a = np.asarray(y, dtype=np.float64)
    b = np.asarray(yhat, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"y and yhat differ in shape: {a.shape} != {b.shape}")
    return a, b


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else math.nan


def mse(y: ArrayLike, yhat: ArrayLike) -> float:
    """Mean squared error."""
    a, b = _pair(y, yhat)
    return float(np.mean((b - a) ** 2)) if a.size else math.nan


def rmse(y: ArrayLike, yhat: ArrayLike) -> float:
    """Root mean squared error."""
    return math.sqrt(mse(y, yhat))


def mae(y: ArrayLike, yhat: ArrayLike) -> float:
    """Mean absolute error."""
    a, b = _pair(y, yhat)
    return float(np.mean(np.abs(b - a))) if a.size else math.nan


def wape(y: ArrayLike, yhat: ArrayLike) -> float:
    """Weighted absolute percentage error: sum|yhat - y| / sum|y| (NaN when sum|y| is 0)."""
    a, b = _pair(y, yhat)
    return _ratio(float(np.sum(np.abs(b - a))), float(np.sum(np.abs(a))))


def bias(y: ArrayLike, yhat: ArrayLike) -> float:
    """Relative bias sum(yhat - y) / sum(y): positive means over-forecast (NaN when sum(y) is 0)."""
    a, b = _pair(y, yhat)
    return _ratio(float(np.sum(b - a)), float(np.sum(a)))


def pinball(y: ArrayLike, q_pred: ArrayLike, q: float) -> float:
    """Mean pinball (quantile) loss of predictions q_pred for the quantile level q in (0, 1)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must lie in (0, 1), got {q}")
    a, b = _pair(y, q_pred)
    diff = a - b
    return float(np.mean(np.maximum(q * diff, (q - 1.0) * diff))) if a.size else math.nan


def coverage(y: ArrayLike, lo: ArrayLike, hi: ArrayLike) -> float:
    """Share of observations inside the closed interval [lo, hi]."""
    a, low = _pair(y, lo)
    _, high = _pair(y, hi)
    return float(np.mean((a >= low) & (a <= high))) if a.size else math.nan


# --- per-series statistics of the training history -------------------------------------------


def _group_starts(codes: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Index of the first row of each run of equal codes (rows sorted by code)."""
    if codes.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1].astype(np.intp)


def _long_stats(
    codes: npt.NDArray[np.intp], units: FloatArray, n_series: int
) -> dict[str, FloatArray]:
    """Scales, ADI and CV² per series from long rows sorted by (series, day)."""
    valid = ~np.isnan(units)
    sold = valid & (units > 0)
    # A series' history counts from its first non-zero sale (M5): "started" marks those rows.
    cum = np.cumsum(sold, dtype=np.int64)
    starts = _group_starts(codes)
    run_len = np.diff(np.r_[starts, codes.size])
    before = np.repeat(np.r_[0, cum][starts], run_len)
    started = (cum - before) > 0

    same = codes[1:] == codes[:-1]
    ok = same & started[:-1] & valid[1:] & valid[:-1]
    diff = (units[1:] - units[:-1])[ok]
    who = codes[1:][ok]
    n_diff = np.bincount(who, minlength=n_series).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale_sq = np.bincount(who, diff**2, minlength=n_series) / n_diff
        scale_abs = np.bincount(who, np.abs(diff), minlength=n_series) / n_diff

        observed = started & valid
        n_obs = np.bincount(codes[observed], minlength=n_series).astype(np.float64)
        n_sold = np.bincount(codes[sold], minlength=n_series).astype(np.float64)
        size_sum = np.bincount(codes[sold], units[sold], minlength=n_series)
        size_sq = np.bincount(codes[sold], units[sold] ** 2, minlength=n_series)
        adi = n_obs / n_sold
        mean_size = size_sum / n_sold
        # Population variance of the non-zero sizes; clipped because of rounding.
        var_size = np.maximum(size_sq / n_sold - mean_size**2, 0.0)
        cv2 = var_size / mean_size**2
    adi[n_sold == 0] = np.nan
    cv2[n_sold == 0] = np.nan
    return {"scale_sq": scale_sq, "scale_abs": scale_abs, "adi": adi, "cv2": cv2}


def classify_demand(adi: FloatArray, cv2: FloatArray) -> npt.NDArray[np.object_]:
    """Syntetos-Boylan class of each (ADI, CV²) pair ("no_demand" where either is NaN)."""
    return _classify(adi, cv2)


def _classify(adi: FloatArray, cv2: FloatArray) -> npt.NDArray[np.object_]:
    labels = np.where(
        adi < ADI_CUTOFF,
        np.where(cv2 < CV2_CUTOFF, "smooth", "erratic"),
        np.where(cv2 < CV2_CUTOFF, "intermittent", "lumpy"),
    ).astype(object)
    labels[np.isnan(adi) | np.isnan(cv2)] = "no_demand"
    return labels


def _wide(history: ArrayLike) -> tuple[npt.NDArray[np.intp], FloatArray, int]:
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"history must be 2-D (n_series, n_days), got shape {h.shape}")
    n_series, n_days = h.shape
    return np.repeat(np.arange(n_series, dtype=np.intp), n_days), h.ravel(), n_series


def naive_scale(history: ArrayLike, *, power: int = 2) -> FloatArray:
    """M5 scale per row of (n_series, n_days): mean |one-step naive diff|**power from first sale."""
    if power not in (1, 2):
        raise ValueError(f"power must be 1 (MASE) or 2 (RMSSE), got {power}")
    stats = _long_stats(*_wide(history))
    return stats["scale_sq"] if power == 2 else stats["scale_abs"]


def demand_class(history: ArrayLike) -> npt.NDArray[np.object_]:
    """Syntetos-Boylan class per row of (n_series, n_days) training history (NaN = not observed).

    ADI (observed days from the first sale / days with a sale) against 1.32 and CV² of the
    non-zero sizes against 0.49 give "smooth", "intermittent", "erratic" or "lumpy"; a series
    without any sale in its history is "no_demand".
    """
    stats = _long_stats(*_wide(history))
    return _classify(stats["adi"], stats["cv2"])


def ordered_codes(history: pd.DataFrame) -> tuple[npt.NDArray[np.intp] | None, Any]:
    """SKU codes and names of a frame already sorted by (sku, date) (None when it is not): from
    its runs, without sorting or hashing 50M SKU strings (seconds and GBs at M5 scale)."""
    sku = history["sku"].to_numpy()
    dates = history["date"].to_numpy()
    if sku.dtype != object or dates.dtype.kind != "M" or len(sku) == 0:
        return None, None
    change = run_starts(sku)
    firsts = sku[change]
    try:
        ascending = bool((firsts[1:] > firsts[:-1]).all())
    except TypeError:  # not all strings
        return None, None
    days = dates.view(np.int64)
    if not ascending or not ((days[1:] > days[:-1]) | change[1:]).all():
        return None, None
    return np.cumsum(change, dtype=np.intp) - 1, pd.Index(firsts, dtype=object)


def series_stats(
    train_history: pd.DataFrame,
    *,
    value: str = "units",
    until: pd.Timestamp | None = None,
    known_only: bool = False,
) -> pd.DataFrame:
    """Per-SKU scale_sq, scale_abs, adi, cv2, recent_units and demand_class from a dense long
    history frame.

    ``until``: only the rows dated on or before it; ``known_only``: only the rows with a known
    value. Either is the statistics of that subset, read in place (no copy of the rows) when
    the frame is in (sku, date) order, as readers give it; SKUs without such rows are absent.
    ``recent_units``: the units of the WEIGHT_DAYS days up to ``until`` (else the frame's last
    day), the WRMSSE weights.
    """
    missing = {"sku", "date", value} - set(train_history.columns)
    if missing:
        raise ValueError(f"train_history lacks columns {sorted(missing)}")
    last = pd.Timestamp(until if until is not None else train_history["date"].max())
    recent_from = (last - pd.Timedelta(days=WEIGHT_DAYS - 1)).to_datetime64()
    codes, skus = ordered_codes(train_history)
    if codes is None:
        rows = _subset(train_history, value, until, known_only)
        hist = train_history if rows is None else train_history[rows]
        hist = hist.sort_values(["sku", "date"], kind="stable")
        sorted_codes, skus = pd.factorize(hist["sku"], sort=False)
        codes = sorted_codes.astype(np.intp)
        values = hist[value].to_numpy(dtype=np.float64, na_value=np.nan)
        stats = _long_stats(codes, values, len(skus))
        dates = pd.to_datetime(hist["date"]).to_numpy(dtype="datetime64[ns]")
        stats["recent_units"] = _recent_units(codes, values, dates, recent_from, len(skus))
    else:
        stats, present = _long_stats_by_runs(
            codes,
            train_history,
            value,
            _subset(train_history, value, until, known_only),
            recent_from,
        )
        skus = skus[present]
    out = pd.DataFrame(stats, index=pd.Index(skus, name="sku"))
    out["demand_class"] = _classify(stats["adi"], stats["cv2"])
    return out


def _subset(
    history: pd.DataFrame, value: str, until: pd.Timestamp | None, known_only: bool
) -> np.ndarray | None:
    """The rows ``series_stats`` reads (None: all)."""
    rows = None
    if until is not None:
        rows = (history["date"] <= until).to_numpy()
    if known_only:
        known = history[value].notna().to_numpy()
        rows = known if rows is None else rows & known
    return rows


# Rows per piece of ``_long_stats_by_runs``: its ~20 row-sized temporaries stay ~0.5 GB.
STATS_CHUNK_ROWS = 4_000_000


def _recent_units(
    codes: npt.NDArray[np.intp],
    units: FloatArray,
    dates: np.ndarray,
    start: np.datetime64,
    n_series: int,
) -> FloatArray:
    """Units per series on the rows dated on or after ``start`` (unknown units count 0)."""
    rows = (dates >= start) & ~np.isnan(units)
    return np.bincount(codes[rows], units[rows], minlength=n_series).astype(np.float64)


def _long_stats_by_runs(
    codes: npt.NDArray[np.intp],
    history: pd.DataFrame,
    value: str,
    rows: np.ndarray | None,
    recent_from: np.datetime64,
) -> tuple[dict[str, FloatArray], np.ndarray]:
    """``_long_stats`` (and ``_recent_units`` from ``recent_from``) of a frame in (sku, date)
    order, a piece of whole SKUs at a time (the same rows in the same order per SKU: the same
    values), and which SKUs had rows."""
    n, n_series = len(codes), int(codes[-1]) + 1
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    wanted = np.arange(STATS_CHUNK_ROWS, n, STATS_CHUNK_ROWS)
    cuts = np.unique(np.r_[0, starts[np.searchsorted(starts, wanted).clip(max=len(starts) - 1)], n])
    column = history[value]
    day = history["date"]
    out: dict[str, FloatArray] = {}
    present = np.zeros(n_series, dtype=bool)
    for a, b in itertools.pairwise(int(c) for c in cuts):
        local = codes[a:b] - codes[a]
        values = column.iloc[a:b].to_numpy(dtype=np.float64, na_value=np.nan)
        dates = day.iloc[a:b].to_numpy()
        if rows is not None:
            keep = rows[a:b]
            local, values, dates = local[keep], values[keep], dates[keep]
        width = int(codes[b - 1] - codes[a]) + 1
        piece = _long_stats(local, values, width)
        piece["recent_units"] = _recent_units(local, values, dates, recent_from, width)
        here = np.bincount(local, minlength=width) > 0
        present[codes[a] : codes[a] + width] = here
        for key, arr in piece.items():
            out.setdefault(key, np.full(n_series, np.nan))[codes[a] : codes[a] + width] = arr
    return {k: v[present] for k, v in out.items()}, present


# --- scaled metrics ---------------------------------------------------------------------------


def _scaled(
    err: FloatArray,
    series: npt.NDArray[np.intp],
    scale: FloatArray,
    weights: FloatArray | None,
    root: bool,
) -> ScaledScore:
    n_series = scale.size
    rows = np.bincount(series, minlength=n_series)
    per_series = np.bincount(series, err, minlength=n_series)
    seen = rows > 0
    usable = seen & np.isfinite(scale) & (scale > 0)
    n_excluded = int(np.count_nonzero(seen & ~usable))
    if not usable.any():
        return ScaledScore(math.nan, 0, n_excluded)
    ratio = per_series[usable] / rows[usable] / scale[usable]
    score = np.sqrt(ratio) if root else ratio
    if weights is None:
        value = float(np.mean(score))
    else:
        w = weights[usable]
        value = _ratio(float(np.sum(w * score)), float(np.sum(w)))
    return ScaledScore(value, int(np.count_nonzero(usable)), n_excluded)


def _scaled_inputs(
    y: ArrayLike,
    yhat: ArrayLike,
    scale: ArrayLike,
    series: ArrayLike | None,
    weights: ArrayLike | None,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp], FloatArray, FloatArray | None]:
    a, b = _pair(y, yhat)
    s = np.asarray(scale, dtype=np.float64).ravel()
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w is not None and w.shape != s.shape:
        raise ValueError("weights must have one value per series, like scale")
    if series is None:
        if a.ndim != 2 or a.shape[0] != s.size:
            raise ValueError("without series codes, y must be 2-D (n_series, horizon)")
        codes = np.repeat(np.arange(a.shape[0], dtype=np.intp), a.shape[1])
        a, b = a.ravel(), b.ravel()
        keep = ~np.isnan(a)  # a NaN actual in the wide form means "no observation"
        return a[keep], b[keep], codes[keep], s, w
    codes = np.asarray(series, dtype=np.intp).ravel()
    if codes.shape != a.shape:
        raise ValueError("series codes must have one entry per observation")
    if codes.size and (codes.min() < 0 or codes.max() >= s.size):
        raise ValueError("series codes must index into scale")
    return a, b, codes, s, w


def rmsse(
    y: ArrayLike,
    yhat: ArrayLike,
    *,
    scale_sq: ArrayLike,
    series: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> ScaledScore:
    """Root mean squared scaled error per series (M5), averaged over series with a positive scale.

    Either y/yhat are (n_series, horizon) with scale_sq per row, or 1-D with integer `series`
    codes indexing scale_sq (a series' rows from several cut-offs are pooled).
    """
    a, b, codes, s, w = _scaled_inputs(y, yhat, scale_sq, series, weights)
    return _scaled((b - a) ** 2, codes, s, w, root=True)


def mase(
    y: ArrayLike,
    yhat: ArrayLike,
    *,
    scale_abs: ArrayLike,
    series: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> ScaledScore:
    """Mean absolute scaled error per series, averaged over series with a positive scale."""
    a, b, codes, s, w = _scaled_inputs(y, yhat, scale_abs, series, weights)
    return _scaled(np.abs(b - a), codes, s, w, root=False)


# --- backtest report ----------------------------------------------------------------------------


def _clean(x: float) -> float | None:
    # NaN and inf are not JSON: undefined metrics become null.
    return float(x) if math.isfinite(x) else None


def _metrics_block(
    y: FloatArray,
    yhat: FloatArray,
    codes: npt.NDArray[np.intp],
    stats: pd.DataFrame,
    weights: FloatArray | None,
    recent: FloatArray | None = None,
) -> dict[str, float | int | None]:
    """Every point metric of the rows; with ``recent`` (units per series) also WRMSSE."""
    sq_err = (yhat - y) ** 2
    scale_sq = stats["scale_sq"].to_numpy()
    sq = _scaled(sq_err, codes, scale_sq, weights, root=True)
    ab = _scaled(np.abs(yhat - y), codes, stats["scale_abs"].to_numpy(), weights, root=False)
    extra: dict[str, float | int | None] = {}
    if recent is not None:
        extra["wrmsse"] = _clean(_scaled(sq_err, codes, scale_sq, recent, root=True).value)
    return {
        "n": int(y.size),
        "n_series": int(np.unique(codes).size),
        "sum_y": float(np.sum(y)),
        "sum_yhat": float(np.sum(yhat)),
        "mse": _clean(mse(y, yhat)),
        "rmse": _clean(rmse(y, yhat)),
        "mae": _clean(mae(y, yhat)),
        "wape": _clean(wape(y, yhat)),
        "bias": _clean(bias(y, yhat)),
        "rmsse": _clean(sq.value),
        "mase": _clean(ab.value),
        "n_scaled_series": sq.n_series,
        "n_excluded_series": sq.n_excluded,
        **extra,
    }


def _groups(labels: np.ndarray) -> list[tuple[Any, npt.NDArray[np.intp]]]:
    """(value, row indices) for each distinct label, in sorted order."""
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable").astype(np.intp)
    return list(zip(values.tolist(), np.split(order, np.cumsum(counts)[:-1]), strict=True))


def _text_groups(values: np.ndarray) -> list[tuple[str, npt.NDArray[np.intp]]]:
    """``_groups`` of the values' text (``str(v)``), from their distinct values: no text array
    of every row (a fixed-width text array and its sort took seconds per model at M5 scale)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    texts = np.array([str(u) for u in uniques], dtype=object)
    text_codes, names = pd.factorize(texts)  # values with the same text form one group
    rows = text_codes[codes].astype(np.intp)
    counts = np.bincount(rows, minlength=len(names))
    order = np.argsort(rows, kind="stable").astype(np.intp)
    parts = np.split(order, np.cumsum(counts)[:-1])
    return [(str(names[k]), parts[k]) for k in sorted(range(len(names)), key=lambda k: names[k])]


def evaluate(
    frame: pd.DataFrame,
    *,
    train_history: pd.DataFrame | None = None,
    segments: Sequence[str] = ("category", "store", "demand_class"),
    series_weights: Mapping[str, float] | pd.Series | None = None,
    train_stats: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Backtest report: all point metrics overall, by segment and by horizon day (JSON-ready).

    frame has sku, date, horizon, y, yhat and the segment columns; "demand_class" is derived from
    train_history (sku, date, units: the history before the cut-off) unless frame carries it.
    Undefined values (e.g. WAPE when no unit was sold) are None. ``train_stats`` (its
    ``series_stats``, e.g. gathered per SKU partition) may stand in for train_history.
    """
    missing = {"sku", "horizon", "y", "yhat"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame lacks columns {sorted(missing)}")
    for seg in segments:
        if seg not in frame.columns and seg != "demand_class":
            raise ValueError(f"frame lacks the segment column {seg!r}")
    y = frame["y"].to_numpy(dtype=np.float64, na_value=np.nan)
    yhat = frame["yhat"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(y).any() or np.isnan(yhat).any():
        raise ValueError("y and yhat must not contain missing values")

    if train_stats is None:
        if train_history is None:
            raise ValueError("evaluate needs train_history or its series_stats (train_stats)")
        train_stats = series_stats(train_history)
    hist_stats = train_stats
    codes_arr, skus = pd.factorize(frame["sku"], sort=False)
    codes = codes_arr.astype(np.intp)
    stats = hist_stats.reindex(pd.Index(skus, name="sku"))
    stats["demand_class"] = stats["demand_class"].fillna("no_demand")
    weights = None
    if series_weights is not None:
        weights = pd.Series(series_weights).reindex(skus).fillna(0.0).to_numpy(dtype=np.float64)

    def block(idx: npt.NDArray[np.intp] | slice) -> dict[str, float | int | None]:
        return _metrics_block(y[idx], yhat[idx], codes[idx], stats, weights)

    by_segment: dict[str, dict[str, dict[str, float | int | None]]] = {}
    for seg in segments:
        if seg == "demand_class" and seg not in frame.columns:
            labels = stats["demand_class"].to_numpy(dtype=object)[codes]
        else:
            labels = frame[seg].to_numpy(dtype=object)
        by_segment[seg] = {k: block(idx) for k, idx in _text_groups(labels)}
    horizons = frame["horizon"].to_numpy(dtype=np.int64)
    by_horizon = {int(h): block(idx) for h, idx in _groups(horizons)}
    # WRMSSE (a selection metric) overall: each series weighted by its recent units.
    recent = None
    if "recent_units" in stats:
        recent = stats["recent_units"].fillna(0.0).to_numpy(dtype=np.float64)
    overall = _metrics_block(y, yhat, codes, stats, weights, recent)
    return {"overall": overall, "by_segment": by_segment, "by_horizon": by_horizon}


def value_added(
    model: Mapping[str, Any],
    baseline: Mapping[str, Any],
    metrics: Iterable[str] = ("rmsse", "wape"),
) -> dict[str, float | None]:
    """Relative improvement 1 - model/baseline per metric (positive = better than the baseline)."""
    out: dict[str, float | None] = {}
    for m in metrics:
        a, b = model.get(m), baseline.get(m)
        out[m] = None if a is None or b is None or b == 0 else _clean(1.0 - float(a) / float(b))
    return out


def value_added_report(
    report: Mapping[str, Any],
    baseline_report: Mapping[str, Any],
    metrics: Iterable[str] = ("rmsse", "wape"),
) -> dict[str, Any]:
    """value_added applied to every block of two evaluate() reports (same shape as a report)."""
    ms = tuple(metrics)
    return {
        "overall": value_added(report["overall"], baseline_report["overall"], ms),
        "by_segment": {
            seg: {
                key: value_added(block, baseline_report["by_segment"][seg].get(key, {}), ms)
                for key, block in values.items()
            }
            for seg, values in report["by_segment"].items()
        },
        "by_horizon": {
            h: value_added(block, baseline_report["by_horizon"].get(h, {}), ms)
            for h, block in report["by_horizon"].items()
        },
    }
