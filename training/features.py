"""FeatureBuilder: the only feature code, shared by training and serving.

``fit`` learns what needs the training window (hierarchy vocabularies, mean encodings, category
reference prices) and freezes the feature list; ``transform`` turns the canonical history frame
(``featurestore.schema.HISTORY_COLUMNS``) into a float32 matrix for chosen target rows.

Time discipline. A builder has a lag floor ``min_lag``: every feature of target day ``d`` uses
units only up to ``e = d - min_lag``. Prices, promotions and the calendar are known in advance,
so their values on ``d`` itself (and before) may be used, never after ``d`` (except the optional
``promo_lookahead``, see ``required_future``). ``min_lag=1`` gives a one-step model for
recursive forecasting; ``min_lag=H`` a direct model whose every feature for the H days after an
origin uses data up to the origin only. The multi-horizon strategy (direct, recursive, or M5's
buckets of lag floors) lives in ``training.forecaster`` and is picked by backtest.

Parity. Every feature of ``d`` depends only on the ``required_history`` days before ``d`` (and
``d`` itself), so a serving frame holding that window gives the training frame's features, and
bit for bit: rolling sums run over blocks aligned to absolute day numbers (van Herk / Gil-Werman),
so each window is summed from its own elements in the same order whatever the frame's first day;
open-ended features (days since a sale, runs of zeros, EWMs, age) are capped at a fixed lookback.
The work runs on a (SKU x day) grid per chunk of SKUs, which bounds memory at 10k x 1,000 scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from featurestore.schema import HISTORY_COLUMNS

PRODUCT_REQUIRED = ("sku", "item_id", "department", "category", "store", "launch_date")
CATEGORICAL = ("department", "category", "store")
ENCODED = ("department", "category", "store", "store_category", "item_id")
CALENDAR_COLUMNS = ("is_holiday", "is_event", "is_snap", "days_to_event", "days_since_event")
PROMO_COLUMNS = ("on_promotion", "promo_depth", "promo_display", "promo_mailer")
# EWM weights below this share of the newest day's weight are dropped (bounds the lookback).
EWM_TOLERANCE = 1e-4
# Grid cells (SKUs x days) per chunk: each working array (~1 MB) stays in cache.
CHUNK_CELLS = 131_072

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class FeatureMatrix:
    """Features of the target rows (columns in the builder's frozen order) with their keys."""

    X: np.ndarray  # float32 (rows x features), column-major: each feature is contiguous
    y: np.ndarray  # units (float32), NaN where unknown
    sku: np.ndarray
    date: np.ndarray
    feature_names: list[str]


@dataclass(frozen=True)
class _Plan:
    """The builder's parameters, validated and resolved; frozen at fit."""

    min_lag: int
    lags: tuple[int, ...]
    windows: tuple[int, ...]
    ewm: tuple[tuple[float, int], ...]  # (alpha, truncation span in days)
    zero_windows: tuple[int, ...]
    price_windows: tuple[int, ...]
    lookback: int
    promo_lookahead: int

    @property
    def unit_windows(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.windows) | set(self.zero_windows)))

    @property
    def required_history(self) -> int:
        longest_units = max(
            [*self.windows, *self.zero_windows, *self.price_windows, self.lookback]
            + [span for _, span in self.ewm]
        )
        return max(max(self.lags), self.min_lag + longest_units - 1, self.lookback - 1, 7)

    def names(self) -> list[str]:
        names = [f"lag_{k}" for k in self.lags]
        for stat in ("mean", "std", "min", "max"):
            names += [f"roll_{stat}_{w}" for w in self.windows]
        names += [f"ewm_{alpha:g}" for alpha, _ in self.ewm]
        names += ["days_since_sale", "zero_run"]
        names += [f"zero_share_{w}" for w in self.zero_windows]
        names += ["price"] + [f"price_ratio_{w}" for w in self.price_windows]
        names += ["price_change_7", "price_ratio_category"]
        names += [*PROMO_COLUMNS, "days_since_promo"]
        if self.promo_lookahead:
            names.append("days_to_promo")
        names += ["dow", "dom", "week", "month", *CALENDAR_COLUMNS]
        names += [*CATEGORICAL, "age"]
        names += [f"te_{key}" for key in ENCODED]
        return names


def default_lags(min_lag: int) -> tuple[int, ...]:
    """The week after the lag floor, four same-weekday lags from it on, and last year's day."""
    weekly = 7 * math.ceil(min_lag / 7)
    lags = {min_lag + k for k in range(7)} | {weekly + 7 * k for k in range(4)} | {364}
    return tuple(sorted(k for k in lags if k >= min_lag))


class FeatureBuilder:
    """Lag, rolling, intermittency, price, promotion, calendar, hierarchy and encoding features."""

    def __init__(
        self,
        *,
        min_lag: int = 1,
        lags: Sequence[int] | None = None,
        windows: Sequence[int] = (7, 14, 28, 56, 91, 180),
        ewm_alphas: Sequence[float] = (0.1, 0.3),
        max_lookback: int | None = None,
        zero_windows: Sequence[int] = (28, 91),
        price_windows: Sequence[int] = (28, 91),
        promo_lookahead: int = 0,
    ) -> None:
        self.min_lag = min_lag
        self.lags = lags
        self.windows = windows
        self.ewm_alphas = ewm_alphas
        self.max_lookback = max_lookback
        self.zero_windows = zero_windows
        self.price_windows = price_windows
        self.promo_lookahead = promo_lookahead

    # -- parameters ---------------------------------------------------------------------------

    def _make_plan(self) -> _Plan:
        min_lag = int(self.min_lag)
        if min_lag < 1:
            raise ValueError(f"min_lag must be >= 1, got {self.min_lag}")
        lags = default_lags(min_lag) if self.lags is None else tuple(sorted(set(self.lags)))
        if not lags or min(lags) < min_lag:
            raise ValueError(f"lags must be non-empty and all >= min_lag={min_lag}, got {lags}")
        groups = {
            "windows": self.windows,
            "zero_windows": self.zero_windows,
            "price_windows": self.price_windows,
        }
        for label, values in groups.items():
            if not values or min(values) < 1:
                raise ValueError(f"{label} must be non-empty positive day counts, got {values}")
        windows = tuple(sorted({int(w) for w in self.windows}))
        lookback = int(self.max_lookback) if self.max_lookback is not None else max(windows)
        if lookback < 1:
            raise ValueError(f"max_lookback must be >= 1, got {self.max_lookback}")
        ewm = []
        for alpha in sorted(set(self.ewm_alphas)):
            if not 0.0 < alpha < 1.0:
                raise ValueError(f"ewm_alphas must lie in (0, 1), got {alpha}")
            span = math.ceil(math.log(EWM_TOLERANCE) / math.log(1.0 - alpha))
            ewm.append((float(alpha), max(1, min(span, lookback))))
        if self.promo_lookahead < 0:
            raise ValueError(f"promo_lookahead must be >= 0, got {self.promo_lookahead}")
        return _Plan(
            min_lag=min_lag,
            lags=tuple(int(k) for k in lags),
            windows=windows,
            ewm=tuple(ewm),
            zero_windows=tuple(sorted({int(w) for w in self.zero_windows})),
            price_windows=tuple(sorted({int(w) for w in self.price_windows})),
            lookback=lookback,
            promo_lookahead=int(self.promo_lookahead),
        )

    @property
    def required_history(self) -> int:
        """Days of history needed before the first target (the reader's window)."""
        plan = self.plan_ if hasattr(self, "plan_") else self._make_plan()
        return plan.required_history

    @property
    def required_future(self) -> int:
        """Days of known covariates needed after the last target (promo_lookahead)."""
        plan = self.plan_ if hasattr(self, "plan_") else self._make_plan()
        return plan.promo_lookahead

    # -- fit ----------------------------------------------------------------------------------

    def fit(self, history: pd.DataFrame, products: pd.DataFrame) -> FeatureBuilder:
        """Learn vocabularies, mean encodings and category prices from rows with known units."""
        plan = self._make_plan()
        _check_columns(history, tuple(HISTORY_COLUMNS), "history")
        _check_products(products)
        known = history.loc[history["units"].notna(), ["sku", "units", "price"]]
        per_sku = known.groupby("sku", sort=False).agg(
            s=("units", "sum"), n=("units", "size"), ps=("price", "sum"), pn=("price", "count")
        )
        attrs = _attributes(products, per_sku.index.to_numpy(dtype=object))
        sums, counts = per_sku["s"].to_numpy(np.float64), per_sku["n"].to_numpy(np.float64)
        encodings: dict[str, dict[str, float]] = {}
        for key in ENCODED:
            encodings[key] = _group_means(attrs[key], sums, counts)
        self.vocabularies_ = {
            key: {v: i for i, v in enumerate(sorted({str(x) for x in products[key].dropna()}))}
            for key in CATEGORICAL
        }
        self.encodings_ = encodings
        self.category_price_ = _group_means(
            attrs["category"],
            per_sku["ps"].to_numpy(np.float64),
            per_sku["pn"].to_numpy(np.float64),
        )
        self.plan_ = plan
        self.features_order_ = tuple(plan.names())
        self.feature_names_ = list(self.features_order_)
        self.categorical_features_ = list(CATEGORICAL)
        self.n_fit_rows_ = len(known)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "plan_"):
            raise NotFittedError("FeatureBuilder is not fitted: call fit() before transform()")

    # -- transform ----------------------------------------------------------------------------

    def transform(
        self,
        history: pd.DataFrame | None,
        products: pd.DataFrame,
        *,
        rows: np.ndarray | Sequence[int] | Sequence[bool] | None = None,
        prepared: Prepared | None = None,
    ) -> FeatureMatrix:
        """Features of the target rows (all rows, or a boolean mask / integer positions).

        ``prepared`` (``prepare(history, products)`` of these very frames) saves re-reading the
        frames' columns when several builders (the stages of a model) transform the same frames;
        with it, ``history`` may be None (``prepare_arrays`` made it from column arrays).
        """
        self._check_fitted()
        plan = self.plan_
        if prepared is None:
            if history is None:
                raise ValueError("transform needs a history frame or prepared inputs")
            prepared = prepare(history, products)
        elif history is not None and prepared.n != len(history):
            raise ValueError("prepared inputs are of another history frame")
        n = prepared.n
        sel = _selection(rows, n)
        names = list(self.features_order_)
        X = np.empty((len(names), len(sel)), dtype=np.float32).T
        out = FeatureMatrix(
            X=X,
            y=prepared.units[sel].astype(np.float32),
            sku=prepared.sku[sel],
            date=prepared.dates[sel],
            feature_names=names,
        )
        if len(sel) == 0:
            return out
        data = prepared.data
        days = data.days
        codes = data.codes
        statics = self._statics(prepared.attrs, data)
        covariates = prepared.covariates
        # Only the window the targets need is put on the grid: rows= costs what it computes.
        t_days = days[sel]
        # Starting min_lag days before the frame keeps every target's last known day on the grid.
        lo = max(int(t_days.min()) - plan.required_history, int(days.min()) - plan.min_lag)
        hi = min(int(t_days.max()) + plan.promo_lookahead, int(days.max()))
        width = hi - lo + 1
        t_codes = codes[sel]
        in_order = bool((t_codes[1:] >= t_codes[:-1]).all())
        order = np.arange(len(sel)) if in_order else np.argsort(t_codes, kind="stable")
        sorted_codes = t_codes[order]
        skus = np.unique(t_codes)
        per_chunk = max(1, CHUNK_CELLS // width)
        for start in range(0, len(skus), per_chunk):
            chunk = skus[start : start + per_chunk]
            a = int(np.searchsorted(sorted_codes, chunk[0], "left"))
            b = int(np.searchsorted(sorted_codes, chunk[-1], "right"))
            pick: slice | IntArray = slice(a, b) if in_order else order[a:b]
            made = _chunk_features(plan, data, chunk, lo, width, sel[pick], statics, covariates)
            for position, (name, values) in enumerate(made):
                if name != names[position]:
                    raise RuntimeError(
                        f"feature {position} is {name!r}, frozen order has {names[position]!r}"
                    )
                X[pick, position] = values
        return out

    def _statics(self, attrs: dict[str, np.ndarray], data: _Frame) -> dict[str, FloatArray]:
        """Per-SKU values (indexed by SKU code): hierarchy codes, encodings, start day, prices."""
        out: dict[str, FloatArray] = {}
        for key in CATEGORICAL:
            vocab = self.vocabularies_[key]
            out[key] = np.array(
                [vocab.get(str(v), -1) if _present(v) else -1 for v in attrs[key]], dtype=np.float64
            )
        for key in ENCODED:
            enc = self.encodings_[key]
            out[f"te_{key}"] = np.array(
                [enc.get(str(v), np.nan) if _present(v) else np.nan for v in attrs[key]],
                dtype=np.float64,
            )
        out["category_price"] = np.array(
            [
                self.category_price_.get(str(v), np.nan) if _present(v) else np.nan
                for v in attrs["category"]
            ],
            dtype=np.float64,
        )
        first = np.minimum.reduceat(data.days[data.by_sku], data.bounds[:-1])
        launch = attrs["launch_date"]
        launch_days = np.where(np.isnat(launch), first, launch.astype(np.int64))
        out["start"] = np.minimum(first, launch_days).astype(np.float64)
        return out


@dataclass
class Prepared:
    """A history frame's columns as arrays and its SKUs' attributes: what every builder reads
    from the frames before computing, shared by the builders of a multi-stage model."""

    n: int
    sku: np.ndarray
    units: np.ndarray
    dates: np.ndarray
    data: _Frame
    covariates: dict[str, np.ndarray]
    attrs: dict[str, np.ndarray]


def prepare(history: pd.DataFrame, products: pd.DataFrame) -> Prepared:
    """Read the frames once for any number of ``FeatureBuilder.transform`` calls on them."""
    _check_columns(history, tuple(HISTORY_COLUMNS), "history")
    return prepare_arrays(
        sku=history["sku"].to_numpy(dtype=object),
        dates=history["date"].to_numpy(),
        days=_day_numbers(history["date"]),
        columns={c: _numeric(history[c]) for c in _ARRAY_COLUMNS},
        products=products,
    )


# The numeric history columns the builders read.
_ARRAY_COLUMNS = ("units", "price", *PROMO_COLUMNS, *CALENDAR_COLUMNS)


def prepare_arrays(
    *,
    sku: np.ndarray,
    dates: np.ndarray,
    days: IntArray,
    columns: dict[str, np.ndarray],
    products: pd.DataFrame,
) -> Prepared:
    """``prepare`` from a history frame's columns as numpy arrays (no frame to build or read).

    ``sku`` (object), ``dates`` (the date column as datetime64), ``days`` (the same as integer
    days since 1970-01-01) and ``columns`` (units, price, promotion and calendar columns with
    the frame's dtypes, NaN for unknown units) give exactly what ``prepare`` of the frame gives.
    """
    _check_products(products)
    n = len(sku)
    missing = [c for c in _ARRAY_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"history columns lack {missing}")
    units_all = columns["units"]
    codes, uniques = _factorize(sku)
    # Rows grouped by SKU (readers give them so; otherwise sort once) so a chunk is a slice.
    grouped = bool((codes[1:] >= codes[:-1]).all())
    by_sku = np.arange(n) if grouped else np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by_sku], np.arange(len(uniques) + 1))
    data = _Frame(
        codes=codes,
        days=np.asarray(days, dtype=np.int64),
        units=units_all,
        price=columns["price"],
        promo=columns["on_promotion"] > 0,
        by_sku=by_sku,
        bounds=bounds,
    )
    return Prepared(
        n=n,
        sku=sku,
        units=units_all,
        dates=dates,
        data=data,
        covariates={c: columns[c] for c in (*PROMO_COLUMNS, *CALENDAR_COLUMNS)},
        attrs=_attributes(products, uniques),
    )


@dataclass
class _Frame:
    """The history's columns as arrays, with SKU codes and absolute day numbers."""

    codes: IntArray
    days: IntArray
    units: np.ndarray
    price: np.ndarray
    promo: np.ndarray
    by_sku: IntArray  # row positions grouped by SKU code
    bounds: IntArray  # by_sku[bounds[c]:bounds[c + 1]] are the rows of SKU code c


def _chunk_features(
    plan: _Plan,
    data: _Frame,
    chunk: IntArray,
    lo: int,
    width: int,
    targets: IntArray,
    statics: dict[str, FloatArray],
    covariates: dict[str, np.ndarray],
) -> Iterator[tuple[str, FloatArray]]:
    """Yield (name, values) for the targets of one chunk of SKUs, in the plan's order."""
    m = len(chunk)
    slot = np.full(len(data.bounds) - 1, -1, dtype=np.int64)
    slot[chunk] = np.arange(m)
    rows = data.by_sku[data.bounds[chunk[0]] : data.bounds[chunk[-1] + 1]]
    row_slot = slot[data.codes[rows]]
    row_day = data.days[rows] - lo
    keep = (row_slot >= 0) & (row_day >= 0) & (row_day < width)
    rows, flat = rows[keep], row_slot[keep] * width + row_day[keep]
    if np.bincount(flat, minlength=m * width).max(initial=0) > 1:
        raise ValueError("history has duplicate (sku, date) rows")
    units = np.full((m, width), np.nan)
    units.reshape(-1)[flat] = data.units[rows]
    price = np.full((m, width), np.nan)
    price.reshape(-1)[flat] = data.price[rows]
    promo = np.zeros((m, width), dtype=bool)
    promo.reshape(-1)[flat] = data.promo[rows]

    tg = slot[data.codes[targets]]
    tc = data.days[targets] - lo
    e = tc - plan.min_lag  # the last day whose units a target may see

    def at(grid: np.ndarray, cols: IntArray) -> FloatArray:
        return _pick(grid[np.newaxis], 0, tg, cols)[0]

    def window(res: tuple[np.ndarray, int], cols: IntArray) -> FloatArray:
        return _pick(res[0], res[1], tg, cols)

    for k in plan.lags:
        yield f"lag_{k}", at(units, tc - k)

    valid = ~np.isnan(units)
    x0 = np.where(valid, units, 0.0)
    stack = np.stack([x0, x0 * x0, valid.astype(np.float64), (units == 0).astype(np.float64)])
    sums: dict[int, FloatArray] = {}
    if _exact_integers(stack):
        # Integer sums below 2**53 are exact in float64 whatever the order: one running sum
        # serves every window, and equals what the blocked path gives.
        running = np.zeros((*stack.shape[:-1], width + 1))
        np.cumsum(stack, axis=-1, out=running[..., 1:])
        end = window((running, 1), e)
        for w in plan.unit_windows:
            sums[w] = end - window((running, 0), np.maximum(e + 1 - w, 0))
        del running
    else:
        for w in plan.unit_windows:
            sums[w] = window(_window_sum(stack, w, lo), e)
    del stack
    low = np.float32(-np.inf)
    extremes = np.stack([np.where(valid, units, low), np.where(valid, -units, low)])
    extremes = extremes.astype(np.float32)  # units are float32: their max is exact
    ext: dict[int, FloatArray] = {w: window(_window_max(extremes, w, lo), e) for w in plan.windows}
    del extremes
    with np.errstate(invalid="ignore", divide="ignore"):
        for w in plan.windows:
            s, _, cnt, _ = sums[w]
            yield f"roll_mean_{w}", np.where(cnt > 0, s / cnt, np.nan)
        for w in plan.windows:
            s, ss, cnt, _ = sums[w]
            var = np.maximum((ss - s * s / cnt) / (cnt - 1), 0.0)
            yield f"roll_std_{w}", np.where(cnt > 1, np.sqrt(var), np.nan)
        for w in plan.windows:
            low = -ext[w][1]
            yield f"roll_min_{w}", np.where(np.isfinite(low), low, np.nan)
        for w in plan.windows:
            high = ext[w][0]
            yield f"roll_max_{w}", np.where(np.isfinite(high), high, np.nan)
        pair = np.stack([x0, valid.astype(np.float64)])
        for alpha, span in plan.ewm:
            num, den = window(_window_sum(pair, span, lo, decay=1.0 - alpha), e)
            yield f"ewm_{alpha:g}", np.where(den > 0, num / den, np.nan)
        del pair, x0

        idx = np.arange(width)
        last_sale = at(np.maximum.accumulate(np.where(units > 0, idx, -1), axis=1), e)
        since = e - last_sale
        yield "days_since_sale", np.where((last_sale >= 0) & (since < plan.lookback), since, np.nan)
        last_break = np.maximum.accumulate(np.where(units == 0, -1, idx), axis=1)
        run = e - at(last_break, e)
        # An unknown last day (before the SKU's first row, or past as_of) has no known run.
        yield "zero_run", np.where(np.isnan(at(units, e)), np.nan, np.minimum(run, plan.lookback))
        for w in plan.zero_windows:
            _, _, cnt, zeros = sums[w]
            yield f"zero_share_{w}", np.where(cnt > 0, zeros / cnt, np.nan)
        del units, valid, last_sale, last_break

        p = at(price, tc)
        yield "price", p
        pstack = np.stack(
            [np.where(np.isnan(price), 0.0, price), (~np.isnan(price)).astype(np.float64)]
        )
        for w in plan.price_windows:
            ps, pn = window(_window_sum(pstack, w, lo), e)
            mean = np.where(pn > 0, ps / pn, np.nan)
            yield f"price_ratio_{w}", np.where(mean > 0, p / mean, np.nan)
        del pstack
        before = at(price, tc - 7)
        yield "price_change_7", np.where(before > 0, p / before - 1.0, np.nan)
        ref = statics["category_price"][data.codes[targets]]
        yield "price_ratio_category", np.where(ref > 0, p / ref, np.nan)

        for c in PROMO_COLUMNS:
            yield c, covariates[c][targets].astype(np.float64)
        last_promo = at(np.maximum.accumulate(np.where(promo, idx, -1), axis=1), tc)
        since = tc - last_promo
        yield (
            "days_since_promo",
            np.where((last_promo >= 0) & (since < plan.lookback), since, np.nan),
        )
        if plan.promo_lookahead:
            nxt = np.minimum.accumulate(np.where(promo, idx, width)[:, ::-1], axis=1)[:, ::-1]
            found = at(nxt, tc)
            until = found - tc
            soon = (found < width) & (until <= plan.promo_lookahead)
            yield "days_to_promo", np.where(soon, until, np.nan)

    day = data.days[targets]
    for name, values in _calendar(lo + np.arange(width)):
        yield name, values[tc]
    for c in CALENDAR_COLUMNS:
        yield c, covariates[c][targets].astype(np.float64)
    sku_code = data.codes[targets]
    for key in CATEGORICAL:
        yield key, statics[key][sku_code]
    yield "age", np.minimum(day - statics["start"][sku_code], plan.required_history)
    for key in ENCODED:
        yield f"te_{key}", statics[f"te_{key}"][sku_code]


def _calendar(day: IntArray) -> Iterator[tuple[str, FloatArray]]:
    """Day of week (Monday 0), day of month, ISO week and month of absolute day numbers."""
    dates = day.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    dow = (day + 3) % 7  # 1970-01-01 was a Thursday
    thursday = dates - dow + 3  # ISO weeks belong to the year of their Thursday
    jan1 = thursday.astype("datetime64[Y]").astype("datetime64[D]")
    week = (thursday - jan1).astype(np.int64) // 7 + 1
    yield "dow", dow.astype(np.float64)
    yield "dom", ((dates - months.astype("datetime64[D]")).astype(np.int64) + 1).astype(np.float64)
    yield "week", week.astype(np.float64)
    yield "month", (months.astype(np.int64) % 12 + 1).astype(np.float64)


def _exact_integers(x: np.ndarray) -> bool:
    """Whether x holds integers whose running sums along the day axis stay below 2**53."""
    if not np.array_equal(x, np.floor(x)):
        return False
    return bool(np.abs(x).sum(axis=-1).max(initial=0.0) < 2.0**52)


def _pick(res: np.ndarray, lead: int, tg: IntArray, cols: IntArray) -> FloatArray:
    """Values of a (k, sku, padded day) result at the targets' cells; NaN before the grid."""
    k, m, padded = res.shape
    flat = tg * padded + lead + cols
    if cols.min() >= 0:
        return np.asarray(res.reshape(k, m * padded)[:, flat], dtype=np.float64)
    ok = cols >= 0
    vals = np.asarray(res.reshape(k, m * padded)[:, np.where(ok, flat, 0)], dtype=np.float64)
    return np.where(ok, vals, np.nan)


# Windows up to this length are summed by shifted adds (faster than short blocks; same order).
SHORT_WINDOW = 8


def _blocks(x: np.ndarray, w: int, lo: int, fill: float) -> tuple[np.ndarray, int]:
    """Pad the day axis so that blocks of ``w`` days start on absolute days divisible by ``w``."""
    lead = lo % w
    width = x.shape[-1]
    nb = -(-(lead + width) // w)
    padded = np.empty((*x.shape[:-1], nb * w), dtype=x.dtype)
    padded[..., :lead] = fill
    padded[..., lead : lead + width] = x
    padded[..., lead + width :] = fill
    return padded.reshape(*x.shape[:-1], nb, w), lead


def _window_sum(
    x: np.ndarray, w: int, lo: int, decay: float | None = None
) -> tuple[np.ndarray, int]:
    """Sums over the ``w`` days ending at each day (weighted by decay**age if given).

    Returns the result on a padded day axis and the offset of the grid's first day in it. Van
    Herk / Gil-Werman on day-aligned blocks: a window is the tail of one block plus the head of
    the next, each a cumulative sum over window elements only, in an order fixed by absolute
    day numbers, so a day's result does not depend on where the frame starts (bit-identical at
    serving and training). Short windows add shifted copies, newest first, for the same reason.
    """
    if w <= SHORT_WINDOW:
        out = np.array(x, dtype=np.float64)
        for j in range(1, w):
            shifted = x[..., :-j] if decay is None else x[..., :-j] * decay**j
            out[..., j:] += shifted
        return out, 0
    blocks, lead = _blocks(x, w, lo, 0.0)
    pos = np.arange(w, dtype=np.float64)
    head = np.cumsum(blocks if decay is None else blocks * decay**-pos, axis=-1)
    tail = np.empty_like(blocks)
    into = blocks if decay is None else blocks * decay ** (w - pos)
    np.cumsum(into[..., ::-1], axis=-1, out=tail[..., ::-1])
    tail[..., 0] = 0.0  # a window starting on a block's first day is that block: head has it
    shape = (*x.shape[:-1], -1)
    out = head.reshape(shape)
    flat_tail = tail.reshape(shape)
    out[..., w - 1 :] += flat_tail[..., : out.shape[-1] - w + 1]
    if decay is not None:
        out.reshape(blocks.shape)[...] *= decay**pos
    return out, lead


def _window_max(x: np.ndarray, w: int, lo: int) -> tuple[np.ndarray, int]:
    """Maxima over the ``w`` days ending at each day (van Herk / Gil-Werman), as _window_sum."""
    if w <= SHORT_WINDOW:
        out = np.array(x)
        for j in range(1, w):
            np.maximum(out[..., j:], x[..., :-j], out=out[..., j:])
        return out, 0
    blocks, lead = _blocks(x, w, lo, -np.inf)
    head = np.maximum.accumulate(blocks, axis=-1)
    tail = np.empty_like(blocks)
    np.maximum.accumulate(blocks[..., ::-1], axis=-1, out=tail[..., ::-1])
    shape = (*x.shape[:-1], -1)
    out = head.reshape(shape)
    flat_tail = tail.reshape(shape)
    np.maximum(out[..., w - 1 :], flat_tail[..., : out.shape[-1] - w + 1], out=out[..., w - 1 :])
    return out, lead


def _check_columns(frame: pd.DataFrame, required: Sequence[str], label: str) -> None:
    """Refuse a frame that lacks columns of the contract (extra columns and order do not matter)."""
    present = set(frame.columns)
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"{label} frame lacks columns {missing}")


def _check_products(products: pd.DataFrame) -> None:
    _check_columns(products, PRODUCT_REQUIRED, "products")


def _attributes(products: pd.DataFrame, skus: np.ndarray) -> dict[str, np.ndarray]:
    """Product attributes for ``skus`` in that order (None / NaT for SKUs without a product)."""
    known = products["sku"].to_numpy(dtype=object)
    where = {s: i for i, s in enumerate(known)}
    if len(where) != len(known):
        raise ValueError("products frame has duplicate skus")
    pos = np.array([where.get(s, -1) for s in skus], dtype=np.int64)
    hit = pos >= 0
    attrs: dict[str, np.ndarray] = {}
    for key in ("item_id", *CATEGORICAL):
        values = np.full(len(skus), None, dtype=object)
        values[hit] = products[key].to_numpy(dtype=object)[pos[hit]]
        attrs[key] = values
    attrs["store_category"] = np.array(
        [
            f"{s}|{c}" if _present(s) and _present(c) else None
            for s, c in zip(attrs["store"], attrs["category"], strict=True)
        ],
        dtype=object,
    )
    launch = np.full(len(skus), np.datetime64("NaT"), dtype="datetime64[D]")
    launch[hit] = _dates(products["launch_date"])[pos[hit]]
    attrs["launch_date"] = launch
    return attrs


def _group_means(keys: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """sum(sums) / sum(counts) per non-missing key."""
    totals: dict[str, list[float]] = {}
    for k, s, n in zip(keys, sums, counts, strict=True):
        if _present(k):
            acc = totals.setdefault(str(k), [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(n)
    return {k: s / n for k, (s, n) in sorted(totals.items()) if n > 0}


def _present(value: object) -> bool:
    return (
        value is not None
        and not (isinstance(value, float) and math.isnan(value))
        and value is not pd.NA
    )


def _dates(column: pd.Series) -> np.ndarray:
    """A date column as datetime64[D] (NaT kept)."""
    values = column.to_numpy()
    if values.dtype.kind != "M":
        values = pd.to_datetime(column).to_numpy()
    return values.astype("datetime64[D]")


def _day_numbers(dates: pd.Series) -> IntArray:
    """Absolute day numbers (days since 1970-01-01) of a datetime column."""
    values = _dates(dates)
    if np.isnat(values).any():
        raise ValueError("history has rows without a date")
    return values.astype(np.int64)


def _numeric(column: pd.Series) -> np.ndarray:
    """A numeric column as a numpy array: its own dtype (no copy), float64 with NaN if nullable."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiub":
        return column.to_numpy()
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _factorize(sku: np.ndarray) -> tuple[IntArray, np.ndarray]:
    """Integer codes and unique values of the SKU column (fast when grouped, as readers give it)."""
    if len(sku) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    change = np.empty(len(sku), dtype=bool)
    change[0] = True
    np.not_equal(sku[1:], sku[:-1], out=change[1:])
    firsts = sku[change]
    if len(set(firsts)) == len(firsts) and not any(not _present(s) for s in firsts):
        return np.cumsum(change, dtype=np.int64) - 1, firsts
    codes, uniques = pd.factorize(sku, use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError("history has rows without a sku")
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def _selection(rows: np.ndarray | Sequence[int] | Sequence[bool] | None, n: int) -> IntArray:
    """Integer positions of the target rows."""
    if rows is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(rows)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"rows mask has shape {arr.shape}, history has {n} rows")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"rows must be a boolean mask or integer positions, got {arr.dtype}")
    pos = arr.astype(np.int64).ravel()
    if pos.size and (pos.min() < -n or pos.max() >= n):
        raise ValueError(f"rows positions out of range for {n} rows")
    return np.where(pos < 0, pos + n, pos)
