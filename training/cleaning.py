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

from dataclasses import dataclass, field

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


def sku_codes(sku: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of a SKU column (in order of first appearance) and the SKU of each code:
    from its runs when each SKU's rows come together (as readers give them), without hashing
    every row; grouping by the codes groups as grouping by the strings does, in the same order."""
    change = run_starts(sku)
    firsts = sku[change]
    if len(set(firsts)) == len(firsts):
        return np.cumsum(change, dtype=np.int64) - 1, firsts
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
    units = history["units"].to_numpy(dtype=np.float64, na_value=np.nan)
    dates = history["date"].to_numpy()
    known = ~np.isnan(units)
    n = len(units)
    # One pass over the SKU column: its runs and their stores serve every rule below.
    change = run_starts(sku)
    code, firsts = np.cumsum(change, dtype=np.int64) - 1, sku[change]
    store, names = _store_codes(products, code, firsts)
    stock_out = _flag(history, "stock_out") & known
    closed_calendar = _flag(history, "closed") & known
    if closed_days is None:
        closed_days = closed_store_days(_store_totals(store, names, dates, units, known))
    closed_store = _on_days(store, names, dates, closed_days) & known
    del store
    runs = _improbable_zero_runs(change, code, units, known)
    censored = stock_out | closed_calendar | closed_store | runs
    if caps is None:  # unit_caps of the known rows (the feature builder's), by run codes
        sold = known & (units > 0)
        caps = _caps(code[sold], firsts, units[sold]) if sold.any() else {}
        del sold
    # Per-SKU values are looked up once a run, not once a row (54M rows took minutes through
    # a pandas Index).
    cap_of = np.array([caps.get(str(v), np.nan) for v in firsts], dtype=np.float64)[code]
    capped = known & ~censored & (units > np.nan_to_num(cap_of, nan=np.inf))
    counts = {
        "stock_out_days": int(stock_out.sum()),
        "zero_run_days": int((runs & ~stock_out).sum()),
        "closed_days": int(((closed_calendar | closed_store) & ~stock_out & ~runs).sum()),
        "censored_days": int(censored.sum()),
        "capped_days": int(capped.sum()),
        "rows": n,
    }
    return Cleaning(censored=censored, caps=caps, counts=counts)


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


def _store_totals(
    store: np.ndarray, names: np.ndarray, dates: np.ndarray, units: np.ndarray, known: np.ndarray
) -> pd.DataFrame:
    """Units per (store, date) of the known rows (``store``: codes into ``names``)."""
    u = units[known]
    if len(u) and np.array_equal(u, np.floor(u)) and np.abs(u).sum() < 2.0**52:
        # Whole units (sales counts): their sums are exact in any order, so a dense (store x
        # day) tally gives pandas' (compensated) group sums exactly, at a fraction of the memory.
        day = day_numbers(dates[known])
        first = int(day.min())
        span = int(day.max()) - first + 1
        key = store[known] * span + (day - first)
        del day
        size = len(names) * span
        sums = np.bincount(key, weights=u, minlength=size)
        rows = np.bincount(key, minlength=size)
        del key
        cell = np.flatnonzero(rows)
        days = (first + cell % span).astype("datetime64[D]").astype(dates.dtype)
        return pd.DataFrame({"store": names[cell // span], "date": days, "u": sums[cell]})
    frame = pd.DataFrame({"store": store[known], "date": dates[known], "u": u}, copy=False)
    out = frame.groupby(["store", "date"], sort=False)["u"].sum().reset_index()
    out["store"] = names[out["store"].to_numpy()]
    return out


def store_day_totals(history: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """Units per (store, date) over the rows with known units; SKU partitions' totals summed
    per (store, date) are the whole catalogue's."""
    sku = history["sku"].to_numpy(dtype=object)
    units = history["units"].to_numpy(dtype=np.float64, na_value=np.nan)
    change = run_starts(sku)
    store, names = _store_codes(products, np.cumsum(change, dtype=np.int64) - 1, sku[change])
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


def _on_days(
    store: np.ndarray, names: np.ndarray, dates: np.ndarray, days: pd.MultiIndex
) -> np.ndarray:
    """Rows whose (store, date) is one of ``days`` (``store``: codes into ``names``)."""
    if len(days) == 0:
        return np.zeros(len(store), dtype=bool)
    lookup = {str(v): i for i, v in enumerate(names)}
    d_store = np.array([lookup.get(str(v), -1) for v in days.get_level_values(0)], dtype=np.int64)
    d_day = day_numbers(days.get_level_values(1).to_numpy())
    ok = d_store >= 0
    if not ok.any():
        return np.zeros(len(store), dtype=bool)
    # A dense (store x day) table of the closures, looked up per row.
    first, last = int(d_day[ok].min()), int(d_day[ok].max())
    table = np.zeros((len(names), last - first + 1), dtype=bool)
    table[d_store[ok], d_day[ok] - first] = True
    day = day_numbers(dates) - first
    inside = (day >= 0) & (day <= last - first)
    np.clip(day, 0, last - first, out=day)
    return table[store, day] & inside


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
