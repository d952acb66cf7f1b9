"""What a model is trained on: censored days left out of the targets, bulk orders capped.

The store keeps every day as it was sold; only the training targets change. A day is censored
(not taught as demand) when its units do not measure demand:

- ``stock_out``: the sales file said the SKU was out of stock (``daily_sales.in_stock`` false);
- ``zero_run``: a run of zero days between two sales that is improbable at the SKU's rate of
  sale days (less than ``ZERO_RUN_CHANCE`` if days sold independently): a stock-out nobody flagged;
- ``closed``: a calendar event of kind ``closed``, or a day the whole store sold nothing though
  its usual day of that weekday sells enough units that an empty day by chance is improbable (a
  closure; a weekday it never sells on is its normal week and stays a zero target).

A bulk order (a day far above the SKU's usual sale days, ``unit_caps``) is real revenue and poor
training signal: targets are capped at the SKU's cap, and the feature builder caps the units its
lags and windows read the same way (training and serving alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

# A zero run is a stock-out when its chance at the SKU's sale-day rate is below this.
ZERO_RUN_CHANCE = 1e-3
# Shorter zero runs are never censored (a day or two without a sale is ordinary).
MIN_ZERO_RUN = 3
# A store day with no sale is a closure when the store's median day of that weekday sells at
# least this many units (a Poisson day of that mean is empty with chance e**-10, about 5e-5).
CLOSURE_MIN_MEDIAN = 10.0
# Caps: a SKU's cap is the larger of CAP_MEDIAN x its median sale day and CAP_Q90 x its 90th
# percentile, for SKUs with at least CAP_MIN_SALE_DAYS sale days (fewer: no cap).
CAP_MEDIAN = 10.0
CAP_Q90 = 3.0
CAP_MIN_SALE_DAYS = 3


@dataclass
class Cleaning:
    """The rows of a history frame kept out of the targets, and the targets' caps."""

    censored: np.ndarray  # bool per row: not a training target
    caps: dict[str, float]  # per SKU; SKUs without a cap are absent
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        """Censored and capped target rows, by reason (what the train output and manifest show)."""
        return dict(self.counts)


def grouped_starts(sku: np.ndarray) -> np.ndarray | None:
    """The first row of each SKU's run when every SKU's rows come together (as readers give
    them), else None: checked on the runs' SKUs, not by hashing every row."""
    starts = np.flatnonzero(run_starts(sku))
    return starts if len(starts) == len(set(sku[starts])) else None


def sku_codes(sku: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a SKU column (in order of first appearance) and the SKU of each code:
    from its runs when each SKU's rows come together (as readers give them), without hashing
    every row; grouping by the codes groups as grouping by the strings does, in the same order."""
    starts = grouped_starts(sku)
    if starts is not None:
        runs = np.diff(np.r_[starts, len(sku)])
        return np.repeat(np.arange(len(starts), dtype=np.int64), runs), sku[starts]
    codes, uniques = pd.factorize(sku, use_na_sentinel=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def unit_caps(sku: np.ndarray, units: np.ndarray) -> dict[str, float]:
    """Per SKU, the units above which a day is a bulk order (see the module's docstring)."""
    sold = ~np.isnan(units) & (units > 0)
    if not sold.any():
        return {}
    # Grouped by integer codes: a frame of 50M SKU strings would be converted to pandas' own
    # string dtype first (minutes at M5 scale).
    codes, names = sku_codes(sku[sold])
    return _caps(codes, names, units[sold])


def _caps(codes: np.ndarray, names: np.ndarray, sold: np.ndarray) -> dict[str, float]:
    """``unit_caps`` of the sale days ``sold`` (units > 0) whose SKUs are ``names[codes]``."""
    frame = pd.DataFrame({"sku": codes, "units": sold.astype(np.float64)})
    grouped = frame.groupby("sku", sort=False)["units"]
    stats = pd.DataFrame(
        {"n": grouped.size(), "median": grouped.median(), "q90": grouped.quantile(0.9)}
    )
    stats = stats[stats["n"] >= CAP_MIN_SALE_DAYS]
    # Whole units: integer histories keep the builder's exact integer sums.
    cap = np.ceil(
        np.maximum(CAP_MEDIAN * stats["median"].to_numpy(), CAP_Q90 * stats["q90"].to_numpy())
    )
    keys = names[stats.index.to_numpy()]
    return {str(k): float(v) for k, v in zip(keys, cap, strict=True)}


def clean_targets(
    history: pd.DataFrame,
    products: pd.DataFrame,
    closed_days: pd.MultiIndex | None = None,
    caps: dict[str, float] | None = None,
) -> Cleaning:
    """Censored rows and caps of a training history (rows grouped by SKU, days consecutive).

    ``closed_days`` gives the store closures (``closed_store_days``) when the history is one
    partition of a catalogue: a closure is read from the whole store's day, not a partition's.
    ``caps``: the history's ``unit_caps`` when already computed.
    """
    sku = history["sku"].to_numpy(dtype=object)
    dates = history["date"].to_numpy()
    n = len(sku)
    # One pass over the SKU column: its runs and their stores serve every rule below.
    change = run_starts(sku)
    starts = np.flatnonzero(change)
    firsts = sku[starts]
    run_store, names = _store_codes(products, np.arange(len(starts)), firsts)
    pieces = sku_pieces(starts, n)
    units_of = partial(_units, history["units"])
    stock_flag, closed_flag = _flag(history, "stock_out"), _flag(history, "closed")
    if closed_days is None:
        closed_days = _closed_days(pieces, starts, change, run_store, names, dates, units_of)
    closures = _Closures(names, closed_days)
    # Every rule but the store's closures is per SKU: computed a piece of whole SKUs at a time,
    # its row-sized temporaries ~0.3 GB whatever the history's size.
    censored = np.zeros(n, dtype=bool)
    found: dict[str, float] = {}
    tally = dict.fromkeys(("stock_out", "zero_run", "closed", "censored", "capped"), 0)
    for a, b, r0, r1 in pieces:
        units = units_of(a, b)
        known = ~np.isnan(units)
        code = np.repeat(np.arange(r1 - r0), np.diff(np.r_[starts[r0:r1], b]))
        stock_out = stock_flag[a:b] & known
        closed_calendar = closed_flag[a:b] & known
        closed_store = closures.on(run_store[r0:r1][code], dates[a:b]) & known
        runs = _improbable_zero_runs(change[a:b], code, units, known)
        cens = stock_out | closed_calendar | closed_store | runs
        censored[a:b] = cens
        piece_caps = caps
        if caps is None:  # unit_caps of the known rows (the feature builder's), by run codes
            sold = known & (units > 0)
            piece_caps = _caps(code[sold], firsts[r0:r1], units[sold]) if sold.any() else {}
            found.update(piece_caps)
            del sold
        assert piece_caps is not None
        # Per-SKU values are looked up once a run, not once a row (54M rows took minutes
        # through a pandas Index).
        cap_run = [piece_caps.get(str(v), np.nan) for v in firsts[r0:r1]]
        cap_of = np.array(cap_run, dtype=np.float64)[code]
        capped = known & ~cens & (units > np.nan_to_num(cap_of, nan=np.inf))
        tally["stock_out"] += int(stock_out.sum())
        tally["zero_run"] += int((runs & ~stock_out).sum())
        closed = (closed_calendar | closed_store) & ~stock_out & ~runs
        tally["closed"] += int(closed.sum())
        tally["censored"] += int(cens.sum())
        tally["capped"] += int(capped.sum())
    if caps is None:
        caps = found
    counts = {f"{k}_days": v for k, v in tally.items()}
    counts["rows"] = n
    return Cleaning(censored=censored, caps=caps, counts=counts)


def _closed_days(
    pieces: list[tuple[int, int, int, int]],
    starts: np.ndarray,
    change: np.ndarray,
    run_store: np.ndarray,
    names: np.ndarray,
    dates: np.ndarray,
    units_of: Callable[[int, int], np.ndarray],
) -> pd.MultiIndex:
    """``closed_store_days`` of the rows' store totals, tallied a piece of whole SKUs at a time
    (pandas' sums of the whole when the units are fractional)."""
    totals = _store_totals_by_pieces(pieces, starts, run_store, names, dates, units_of)
    if totals is None:
        n = len(dates)
        units = units_of(0, n)
        code = np.cumsum(change, dtype=np.int64) - 1
        totals = _store_totals(run_store[code], names, dates, units, ~np.isnan(units))
    return closed_store_days(totals)


def store_closures(history: pd.DataFrame, products: pd.DataFrame) -> pd.MultiIndex:
    """The (store, date) closures of a whole history (rows grouped by SKU): days its store sold
    nothing though that weekday usually sells plenty (``closed_store_days``)."""
    sku = history["sku"].to_numpy(dtype=object)
    change = run_starts(sku)
    starts = np.flatnonzero(change)
    run_store, names = _store_codes(products, np.arange(len(starts)), sku[starts])
    return _closed_days(
        sku_pieces(starts, len(sku)),
        starts,
        change,
        run_store,
        names,
        history["date"].to_numpy(),
        partial(_units, history["units"]),
    )


def not_demand(
    history: pd.DataFrame, products: pd.DataFrame, closed_days: pd.MultiIndex
) -> np.ndarray:
    """Per row, whether its units measure no demand whatever the model: flagged out of stock,
    a ``closed`` calendar day, or its store closed that day (``closed_days``:
    ``store_closures`` of the whole history). Backtests score the other rows, as training
    keeps these out of its targets."""
    store, names = _row_stores(history, products)
    closed = _Closures(names, closed_days).on(store, history["date"].to_numpy())
    return np.asarray(_flag(history, "stock_out") | _flag(history, "closed") | closed)


# Rows per piece of clean_targets (whole SKUs): its ~25 row-sized temporaries stay ~0.3 GB.
CLEAN_PIECE_ROWS = 2_000_000


def sku_pieces(
    starts: np.ndarray, n: int, rows: int | None = None
) -> list[tuple[int, int, int, int]]:
    """Row ranges of whole SKU runs of about ``rows`` rows (default CLEAN_PIECE_ROWS): (first
    row, end row, first run, end run); ``starts`` are the runs' first rows."""
    if n == 0:
        return []
    size = CLEAN_PIECE_ROWS if rows is None else rows
    wanted = np.arange(size, n, size)
    run_cuts = np.unique(np.r_[0, np.searchsorted(starts, wanted), len(starts)])
    run_cuts = run_cuts[run_cuts <= len(starts)]
    first = np.r_[starts, n][run_cuts]
    return [
        (int(first[i]), int(first[i + 1]), int(run_cuts[i]), int(run_cuts[i + 1]))
        for i in range(len(run_cuts) - 1)
        if first[i + 1] > first[i]
    ]


def _units(column: pd.Series, a: int, b: int) -> np.ndarray:
    return column.iloc[a:b].to_numpy(dtype=np.float64, na_value=np.nan)


class _DayTally:
    """Units and rows per (store, day) on a dense (store x day) grid: sums of whole units are
    exact in any order, so pieces tallied one after another give pandas' group sums exactly."""

    def __init__(self, names: np.ndarray, first: int, last: int) -> None:
        self.names, self.first, self.span = names, first, last - first + 1
        size = len(names) * self.span
        self.sums = np.zeros(size)
        self.rows = np.zeros(size, dtype=np.int64)

    def add(self, store: np.ndarray, day: np.ndarray, units: np.ndarray) -> None:
        """Rows of stores ``store`` (codes into names) on days ``day`` (day_numbers)."""
        key = store * self.span + (day - self.first)
        self.sums += np.bincount(key, weights=units, minlength=len(self.sums))
        self.rows += np.bincount(key, minlength=len(self.rows))

    def frame(self, dtype: np.dtype[Any]) -> pd.DataFrame:
        """store, date (as ``dtype``), u of every (store, day) that has a row."""
        cell = np.flatnonzero(self.rows)
        days = (self.first + cell % self.span).astype("datetime64[D]").astype(dtype)
        return pd.DataFrame(
            {"store": self.names[cell // self.span], "date": days, "u": self.sums[cell]}
        )


def _store_totals_by_pieces(
    pieces: list[tuple[int, int, int, int]],
    starts: np.ndarray,
    run_store: np.ndarray,
    names: np.ndarray,
    dates: np.ndarray,
    units_of: Callable[[int, int], np.ndarray],
) -> pd.DataFrame | None:
    """``_store_totals`` tallied piece by piece (``_DayTally``), exact when the units are whole;
    None when a piece's units are not whole."""
    if len(dates) == 0:
        return None
    all_days = day_numbers(np.array([dates.min(), dates.max()]))
    tally = _DayTally(names, int(all_days[0]), int(all_days[1]))
    total = 0.0
    for a, b, r0, r1 in pieces:
        units = units_of(a, b)
        known = ~np.isnan(units)
        u = units[known]
        if not np.array_equal(u, np.floor(u)):
            return None
        total += float(np.abs(u).sum())
        if total >= 2.0**52:
            return None
        code = np.repeat(np.arange(r0, r1), np.diff(np.r_[starts[r0:r1], b]))
        tally.add(run_store[code][known], day_numbers(dates[a:b][known]), u)
    if not tally.rows.any():
        return None
    return tally.frame(dates.dtype)


def _flag(history: pd.DataFrame, name: str) -> np.ndarray:
    if name not in history:
        return np.zeros(len(history), dtype=bool)
    return history[name].to_numpy(dtype=np.float64, na_value=0.0) > 0


def run_starts(sku: np.ndarray) -> np.ndarray:
    """Per row, whether it starts a run of equal SKUs (rows come grouped by SKU)."""
    change = np.empty(len(sku), dtype=bool)
    if len(sku):
        change[0] = True
        np.not_equal(sku[1:], sku[:-1], out=change[1:])
    return change


def _store_codes(
    products: pd.DataFrame, code: np.ndarray, firsts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, its store's code, and the store of each code ("" when unknown), from the rows'
    run codes and the runs' SKUs: the rows' stores as integers (grouping and matching 50M
    store strings is what took the time)."""
    store_of = dict(zip(products["sku"].astype(str), products["store"], strict=True))
    per_run = np.array(
        [str(v) if isinstance(v, str) else "" for v in (store_of.get(str(f)) for f in firsts)],
        dtype=object,
    )
    run_code, names = pd.factorize(per_run)
    return run_code.astype(np.int64)[code], np.asarray(names, dtype=object)


def _row_stores(history: pd.DataFrame, products: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a SKU-sorted history, its store's code, and the store of each code."""
    sku = history["sku"].to_numpy(dtype=object)
    change = run_starts(sku)
    return _store_codes(products, np.cumsum(change, dtype=np.int64) - 1, sku[change])


def _store_totals(
    store: np.ndarray, names: np.ndarray, dates: np.ndarray, units: np.ndarray, known: np.ndarray
) -> pd.DataFrame:
    """Units per (store, date) of the known rows (``store``: codes into ``names``)."""
    u = units[known]
    if len(u) and np.array_equal(u, np.floor(u)) and np.abs(u).sum() < 2.0**52:
        # Whole units (sales counts): their sums are exact in any order, so a dense (store x
        # day) tally gives pandas' (compensated) group sums exactly, at a fraction of the memory.
        day = day_numbers(dates[known])
        tally = _DayTally(names, int(day.min()), int(day.max()))
        tally.add(store[known], day, u)
        return tally.frame(dates.dtype)
    frame = pd.DataFrame({"store": store[known], "date": dates[known], "u": u}, copy=False)
    out = frame.groupby(["store", "date"], sort=False)["u"].sum().reset_index()
    out["store"] = names[out["store"].to_numpy()]
    return out


def store_day_totals(history: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Units per (store, date) over the rows with known units; SKU partitions' totals summed
    per (store, date) are the whole catalogue's."""
    units = history["units"].to_numpy(dtype=np.float64, na_value=np.nan)
    store, names = _row_stores(history, products)
    return _store_totals(store, names, history["date"].to_numpy(), units, ~np.isnan(units))


def closed_store_days(totals: pd.DataFrame) -> pd.MultiIndex:
    """(store, date) pairs the whole store sold nothing while its median day of that weekday
    sells plenty. A weekday the store never sells on (closed on Sundays, no shipping on
    weekends) is its normal week, taught as zero, not censored."""
    totals = totals.groupby(["store", "date"], sort=False)["u"].sum().reset_index()
    totals["dow"] = pd.to_datetime(totals["date"]).dt.day_of_week
    median = totals.groupby(["store", "dow"])["u"].transform("median")
    empty_rows = totals[(totals["u"] == 0) & (median >= CLOSURE_MIN_MEDIAN)]
    return pd.MultiIndex.from_frame(empty_rows[["store", "date"]])


class _Closures:
    """Store closures as a dense (store x day) table, looked up per row (``names``: the stores
    of the rows' store codes)."""

    def __init__(self, names: np.ndarray, days: pd.MultiIndex) -> None:
        self.table: np.ndarray | None = None
        if len(days) == 0:
            return
        lookup = {str(v): i for i, v in enumerate(names)}
        stores = days.get_level_values(0)
        d_store = np.array([lookup.get(str(v), -1) for v in stores], dtype=np.int64)
        d_day = day_numbers(days.get_level_values(1).to_numpy())
        ok = d_store >= 0
        if not ok.any():
            return
        self.first, self.last = int(d_day[ok].min()), int(d_day[ok].max())
        self.table = np.zeros((len(names), self.last - self.first + 1), dtype=bool)
        self.table[d_store[ok], d_day[ok] - self.first] = True

    def on(self, store: np.ndarray, dates: np.ndarray) -> np.ndarray:
        """Rows whose (store code, date) is a closure."""
        if self.table is None:
            return np.zeros(len(store), dtype=bool)
        width = self.last - self.first
        day = day_numbers(dates) - self.first
        inside = (day >= 0) & (day <= width)
        np.clip(day, 0, width, out=day)
        return self.table[store, day] & inside


def day_numbers(dates: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of datetime64 values (floored, as a cast to datetime64[D]): one
    integer division of the ticks, ten times faster than the cast at 54M rows."""
    values = np.asarray(dates)
    unit, count = np.datetime_data(values.dtype)
    per_day = _TICKS_PER_DAY.get(unit, 0)
    if per_day == 0 or per_day % count:
        return values.astype("datetime64[D]").astype(np.int64)
    ticks = values.view(np.int64)
    return ticks // (per_day // count) if per_day > count else ticks.copy()


_TICKS_PER_DAY = {
    "D": 1,
    "h": 24,
    "m": 1440,
    "s": 86_400,
    "ms": 86_400_000,
    "us": 86_400_000_000,
    "ns": 86_400_000_000_000,
}


def _improbable_zero_runs(
    change: np.ndarray, code: np.ndarray, units: np.ndarray, known: np.ndarray
) -> np.ndarray:
    """Rows in zero runs between two sales of the same SKU that are improbable at its rate
    (``change``/``code``: the SKU runs' starts and each row's run)."""
    n = len(units)
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    zero = known & (units == 0)
    sold = known & (units > 0)
    # Per SKU: share of known days with a sale.
    n_known = np.bincount(code, weights=known, minlength=code[-1] + 1)
    n_sold = np.bincount(code, weights=sold, minlength=code[-1] + 1)
    rate = np.divide(n_sold, n_known, out=np.zeros_like(n_sold), where=n_known > 0)
    with np.errstate(divide="ignore"):
        longest = np.where(
            (rate > 0) & (rate < 1),
            np.log(ZERO_RUN_CHANCE) / np.log1p(-np.minimum(rate, 1 - 1e-12)),
            np.inf,
        )
    need = np.maximum(np.ceil(longest), MIN_ZERO_RUN)
    # Runs of zeros: a new run starts at a zero after a non-zero (or a new SKU).
    start = zero & (change | ~np.r_[False, zero[:-1]])
    run_id = np.cumsum(start, dtype=np.int64) - 1
    ids = run_id[zero]
    if len(ids) == 0:
        return out
    length = np.bincount(ids)
    first = np.flatnonzero(start)
    last = first + length - 1
    # Bounded by sales of the same SKU on both sides: a restock followed (not a discontinuation
    # or the end of the data) and the SKU was selling before (not its launch).
    before = first - 1
    after = last + 1
    ok = (before >= 0) & (after < n)
    ok[ok] &= (code[before[ok]] == code[first[ok]]) & (code[after[ok]] == code[first[ok]])
    ok[ok] &= sold[before[ok]] & sold[after[ok]]
    improbable = ok & (length >= need[code[first]])
    out[zero] = improbable[ids]
    return out
