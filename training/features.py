"""FeatureBuilder: the only feature code, shared by training and serving.

``fit`` learns what needs the training window (vocabularies, mean encodings, category prices)
and freezes the feature list; ``transform`` turns the history frame (``HISTORY_COLUMNS``) into a
float32 matrix for chosen target rows. Every feature of day ``d`` uses units only up to
``d - min_lag`` and known-in-advance covariates up to ``d`` (plus ``promo_lookahead``), and only
the ``required_history`` days before ``d``: a serving window gives the training features exactly.
The computations are in ``training.feature_grid``; bundles pickle this module's classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from featurestore.schema import HISTORY_COLUMNS
from training.cleaning import grouped_starts, sku_codes, sku_pieces, unit_caps
from training.feature_grid import (
    CALENDAR_COLUMNS,
    CATEGORICAL,
    ENCODED,
    PROMO_COLUMNS,
    FloatArray,
    Grid,
    HistoryArrays,
    IntArray,
    chunk_features,
    feature_names,
)
from training.feature_inputs import (
    PRODUCT_REQUIRED,
    Prepared,
    check_columns,
    check_products,
    prepare,
    prepare_arrays,
    present,
    sku_attributes,
)

__all__ = [
    "CALENDAR_COLUMNS",
    "CATEGORICAL",
    "CHUNK_CELLS",
    "ENCODED",
    "EWM_TOLERANCE",
    "PRODUCT_REQUIRED",
    "PROMO_COLUMNS",
    "FeatureBuilder",
    "FeatureMatrix",
    "Prepared",
    "default_lags",
    "prepare",
    "prepare_arrays",
    "sku_totals",
    "transform_stages",
]

# EWM weights below this share of the newest day's weight are dropped (bounds the lookback).
EWM_TOLERANCE = 1e-4
# Grid cells (SKUs x days) per chunk: small enough for each working array to stay in cache.
CHUNK_CELLS = 131_072


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
        return feature_names(self)


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
        cap_units: bool = True,
    ) -> None:
        self.min_lag = min_lag
        self.lags = lags
        self.windows = windows
        self.ewm_alphas = ewm_alphas
        self.max_lookback = max_lookback
        self.zero_windows = zero_windows
        self.price_windows = price_windows
        self.promo_lookahead = promo_lookahead
        # Units above a SKU's bulk-order cap (training.cleaning.unit_caps, learned at fit) are
        # read at the cap by the unit features: one 5,000-unit order does not move every window.
        self.cap_units = cap_units

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
        self._make_plan()
        check_columns(history, tuple(HISTORY_COLUMNS), "history")
        return self.fit_totals(sku_totals(history), products)

    def fit_totals(self, per_sku: pd.DataFrame, products: pd.DataFrame) -> FeatureBuilder:
        """``fit`` from the per-SKU totals (``sku_totals``) alone: SKU partitions' totals,
        concatenated in SKU order, fit the builder exactly as the whole history does."""
        plan = self._make_plan()
        check_products(products)
        attrs = sku_attributes(products, per_sku.index.to_numpy(dtype=object))
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
        self.n_fit_rows_ = int(per_sku["n"].sum())
        caps = per_sku["cap"] if "cap" in per_sku else pd.Series(dtype=np.float64)
        self.unit_caps_ = (
            {str(k): float(v) for k, v in caps.dropna().items()} if self.cap_units else {}
        )
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
        unused: frozenset[str] = frozenset(),
    ) -> FeatureMatrix:
        """Features of the target rows (all rows, or a boolean mask / integer positions).

        ``prepared`` (``prepare(history, products)`` of these very frames) saves re-reading the
        frames' columns when several builders (the stages of a model) transform the same frames;
        with it, ``history`` may be None (``prepare_arrays`` made it from column arrays).
        ``unused``: features the caller drops, left at 0 instead of computed (an attribute-only
        model skips every window of the units); the other columns are the same.
        """
        self._check_fitted()
        if prepared is None:
            if history is None:
                raise ValueError("transform needs a history frame or prepared inputs")
            prepared = prepare(history, products)
        elif history is not None and prepared.n != len(history):
            raise ValueError("prepared inputs are of another history frame")
        return transform_stages([self], [rows], prepared, unused=[unused])[0]

    def _statics(self, attrs: dict[str, np.ndarray], data: HistoryArrays) -> dict[str, FloatArray]:
        """Per-SKU values (indexed by SKU code): hierarchy codes, encodings, start day, prices."""
        out: dict[str, FloatArray] = {}
        for key in CATEGORICAL:
            vocab = self.vocabularies_[key]
            out[key] = np.array(
                [vocab.get(str(v), -1) if present(v) else -1 for v in attrs[key]], dtype=np.float64
            )
        for key in ENCODED:
            enc = self.encodings_[key]
            out[f"te_{key}"] = np.array(
                [enc.get(str(v), np.nan) if present(v) else np.nan for v in attrs[key]],
                dtype=np.float64,
            )
        out["category_price"] = np.array(
            [
                self.category_price_.get(str(v), np.nan) if present(v) else np.nan
                for v in attrs["category"]
            ],
            dtype=np.float64,
        )
        caps = getattr(self, "unit_caps_", {})
        out["unit_cap"] = np.array([caps.get(str(v), np.inf) for v in attrs["sku"]])
        first = np.minimum.reduceat(data.days[data.by_sku], data.bounds[:-1])
        launch = attrs["launch_date"]
        launch_days = np.where(np.isnat(launch), first, launch.astype(np.int64))
        out["start"] = np.minimum(first, launch_days).astype(np.float64)
        return out


def transform_stages(
    builders: Sequence[FeatureBuilder],
    rows: Sequence[np.ndarray | Sequence[int] | Sequence[bool] | None],
    prepared: Prepared,
    *,
    unused: Sequence[frozenset[str]] | None = None,
) -> list[FeatureMatrix]:
    """Each fitted builder's features of its own target rows of one prepared history.

    The stages of a model (one builder each, with its own lag floor) read the same grid: each
    chunk of SKUs is put on the day grid once, and its window sums, maxima and runs are
    computed once for every builder with the same unit caps. A builder gets exactly the matrix
    its own ``transform`` gives: every grid result is aligned to absolute days, so a grid
    spanning all the builders' windows gives each the same values as its own narrower one.
    ``unused`` (per builder): features its estimator drops; those no builder keeps are left
    at 0 instead of computed (FeatureBuilder.transform).
    """
    skipped = frozenset.intersection(*unused) if unused else frozenset()
    n = prepared.n
    sels = [_selection(r, n) for r in rows]
    outs = []
    for builder, sel in zip(builders, sels, strict=True):
        builder._check_fitted()
        names = list(builder.features_order_)
        outs.append(
            FeatureMatrix(
                X=np.empty((len(names), len(sel)), dtype=np.float32).T,
                y=prepared.units[sel].astype(np.float32),
                sku=prepared.sku[sel],
                date=prepared.dates[sel],
                feature_names=names,
            )
        )
    busy = [i for i, sel in enumerate(sels) if len(sel)]
    if not busy:
        return outs
    data = prepared.data
    days, codes = data.days, data.codes
    first, last = int(days.min()), int(days.max())
    statics: dict[int, dict[str, FloatArray]] = {}
    orders: dict[int, tuple[bool, IntArray, IntArray]] = {}
    lo, hi = None, None
    for i in busy:
        plan, sel = builders[i].plan_, sels[i]
        statics[i] = builders[i]._statics(prepared.attrs, data)
        t_days, t_codes = days[sel], codes[sel]
        # Only the window the targets need is put on the grid: rows= costs what it computes.
        # Starting min_lag days before the frame keeps every target's last known day on it.
        b_lo = max(int(t_days.min()) - plan.required_history, first - plan.min_lag)
        b_hi = min(int(t_days.max()) + plan.promo_lookahead, last)
        lo = b_lo if lo is None else min(lo, b_lo)
        hi = b_hi if hi is None else max(hi, b_hi)
        in_order = bool((t_codes[1:] >= t_codes[:-1]).all())
        order = np.arange(len(sel)) if in_order else np.argsort(t_codes, kind="stable")
        orders[i] = (in_order, order, t_codes[order])
    assert lo is not None and hi is not None
    width = hi - lo + 1
    skus = np.unique(np.concatenate([codes[sels[i]] for i in busy]))
    per_chunk = max(1, CHUNK_CELLS // width)
    for start in range(0, len(skus), per_chunk):
        chunk = skus[start : start + per_chunk]
        grids: list[tuple[FloatArray, Grid]] = []
        for i in busy:
            in_order, order, sorted_codes = orders[i]
            a = int(np.searchsorted(sorted_codes, chunk[0], "left"))
            b = int(np.searchsorted(sorted_codes, chunk[-1], "right"))
            if a == b:
                continue
            cap = statics[i]["unit_cap"][chunk]
            grid = next((g for c, g in grids if np.array_equal(c, cap)), None)
            if grid is None:
                grid = Grid(data, chunk, lo, width, cap)
                grids.append((cap, grid))
            pick: slice | IntArray = slice(a, b) if in_order else order[a:b]
            plan, names, X = builders[i].plan_, outs[i].feature_names, outs[i].X
            made = chunk_features(
                plan, data, grid, sels[i][pick], statics[i], prepared.covariates, skipped
            )
            for position, (name, values) in enumerate(made):
                if name != names[position]:
                    raise RuntimeError(
                        f"feature {position} is {name!r}, frozen order has {names[position]!r}"
                    )
                X[pick, position] = values
    return outs


def sku_totals(history: pd.DataFrame, caps: dict[str, float] | None = None) -> pd.DataFrame:
    """Per SKU (in order of appearance): sum and count of known units, sum and count of prices,
    and the bulk-order cap (training.cleaning.unit_caps; NaN: no cap; ``caps``: those caps when
    already computed). Every column is a SKU's own, so SKU partitions' totals concatenated are
    the whole history's: a history whose SKUs' rows come together is totalled a piece of whole
    SKUs at a time (bounded memory at M5 scale)."""
    sku = history["sku"].to_numpy(dtype=object)
    starts = grouped_starts(sku)
    if starts is None or len(starts) < 2:
        return _sku_totals(history, caps)
    parts = [_sku_totals(history.iloc[a:b], caps) for a, b, _, _ in sku_pieces(starts, len(sku))]
    totals = pd.concat([p for p in parts if len(p)] or parts[:1])
    totals.index = pd.Index(totals.index.to_numpy(dtype=object), dtype=object, name="sku")
    return totals


def _sku_totals(history: pd.DataFrame, caps: dict[str, float] | None) -> pd.DataFrame:
    units = history["units"]
    known = units.notna().to_numpy()
    sku = history["sku"].to_numpy(dtype=object)[known]
    # Grouped by integer codes, in the same order as by the SKU strings (sku_codes).
    codes, names = sku_codes(sku)
    frame = pd.DataFrame(
        {
            "sku": codes,
            "units": units.to_numpy()[known],
            "price": history["price"].to_numpy()[known],
        },
        copy=False,
    )
    del codes
    totals = frame.groupby("sku", sort=False).agg(
        s=("units", "sum"), n=("units", "size"), ps=("price", "sum"), pn=("price", "count")
    )
    totals.index = pd.Index(names[totals.index.to_numpy()], dtype=object, name="sku")
    if caps is None:
        caps = unit_caps(sku, frame["units"].to_numpy(dtype=np.float64, na_value=np.nan))
    del frame, sku
    totals["cap"] = pd.Series(caps, dtype=np.float64).reindex(totals.index.astype(str)).to_numpy()
    return totals


def _group_means(keys: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    """sum(sums) / sum(counts) per non-missing key."""
    totals: dict[str, list[float]] = {}
    for k, s, n in zip(keys, sums, counts, strict=True):
        if present(k):
            acc = totals.setdefault(str(k), [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(n)
    return {k: s / n for k, (s, n) in sorted(totals.items()) if n > 0}


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
