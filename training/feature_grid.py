"""How each feature is computed: lags, rolling windows, intermittency, prices, promotions and
the calendar on a (SKU x day) grid, one chunk of SKUs at a time.

Rolling sums and maxima run over blocks aligned to absolute day numbers (van Herk / Gil-Werman),
so a day's value does not depend on where the frame starts: serving's short window gives the
training frame's features bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from training.features import _Plan

CATEGORICAL = ("department", "category", "store")
ENCODED = ("department", "category", "store", "store_category", "item_id")
CALENDAR_COLUMNS = ("is_holiday", "is_event", "is_snap", "days_to_event", "days_since_event")
PROMO_COLUMNS = ("on_promotion", "promo_depth", "promo_display", "promo_mailer")

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass
class HistoryArrays:
    """The history's columns as arrays, with SKU codes and absolute day numbers."""

    codes: IntArray
    days: IntArray
    units: np.ndarray
    price: np.ndarray
    promo: np.ndarray
    price_paid: np.ndarray  # bool: the price is one paid on order lines, not a listed one
    by_sku: IntArray  # row positions grouped by SKU code
    bounds: IntArray  # by_sku[bounds[c]:bounds[c + 1]] are the rows of SKU code c


def feature_names(plan: _Plan) -> list[str]:
    """The plan's features in the order ``chunk_features`` yields them (add a feature to both)."""
    names = [f"lag_{k}" for k in plan.lags]
    for stat in ("mean", "std", "min", "max"):
        names += [f"roll_{stat}_{w}" for w in plan.windows]
    names += [f"ewm_{alpha:g}" for alpha, _ in plan.ewm]
    names += ["days_since_sale", "zero_run"]
    names += [f"zero_share_{w}" for w in plan.zero_windows]
    names += ["price"] + [f"price_ratio_{w}" for w in plan.price_windows]
    names += ["price_change_7", "price_ratio_category"]
    names += [*PROMO_COLUMNS, "days_since_promo"]
    if plan.promo_lookahead:
        names.append("days_to_promo")
    names += ["dow", "dom", "week", "month", *CALENDAR_COLUMNS]
    names += [*CATEGORICAL, "age"]
    names += [f"te_{key}" for key in ENCODED]
    return names


class Grid:
    """One chunk of SKUs on the (SKU x day) grid, days ``lo .. lo + width - 1``, with the
    window results the plans read from it, each computed once when first asked for: the
    stages of a model (one plan each) transform the same chunk from one grid. Every result is
    aligned to absolute day numbers, so it does not depend on where the grid starts."""

    def __init__(
        self, data: HistoryArrays, chunk: IntArray, lo: int, width: int, cap: FloatArray
    ) -> None:
        m = len(chunk)
        self.lo, self.width = lo, width
        self.slot = np.full(len(data.bounds) - 1, -1, dtype=np.int64)
        self.slot[chunk] = np.arange(m)
        rows = data.by_sku[data.bounds[chunk[0]] : data.bounds[chunk[-1] + 1]]
        row_slot = self.slot[data.codes[rows]]
        row_day = data.days[rows] - lo
        keep = (row_slot >= 0) & (row_day >= 0) & (row_day < width)
        rows, flat = rows[keep], row_slot[keep] * width + row_day[keep]
        if np.bincount(flat, minlength=m * width).max(initial=0) > 1:
            raise ValueError("history has duplicate (sku, date) rows")
        units = np.full((m, width), np.nan)
        units.reshape(-1)[flat] = data.units[rows]
        if np.isfinite(cap).any():
            np.minimum(units, cap[:, np.newaxis], out=units)
        self.units = units
        self.price = np.full((m, width), np.nan)
        self.price.reshape(-1)[flat] = data.price[rows]
        self.promo = np.zeros((m, width), dtype=bool)
        self.promo.reshape(-1)[flat] = data.promo[rows]
        self.paid = np.zeros((m, width), dtype=bool)
        self.paid.reshape(-1)[flat] = data.price_paid[rows]
        self.valid = ~np.isnan(units)
        self.x0 = np.where(self.valid, units, 0.0)
        self.idx = np.arange(width)
        self._memo: dict[tuple[Any, ...], Any] = {}

    def _get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def running(self) -> np.ndarray | None:
        """Running sums of (units, units^2, known, zero) from the grid's first day, when they
        are exact (integer units: every window is a difference of two of them); else None."""

        def make() -> np.ndarray | None:
            stack = np.stack(
                [self.x0, self.x0 * self.x0, self.valid.astype(np.float64), self.zero()]
            )
            if not _exact_integers(stack):
                return None
            # Integer sums below 2**53 are exact in float64 whatever the order: one running sum
            # serves every window, and equals what the blocked path gives.
            out = np.zeros((*stack.shape[:-1], self.width + 1))
            np.cumsum(stack, axis=-1, out=out[..., 1:])
            return out

        result: np.ndarray | None = self._get(("running",), make)
        return result

    def zero(self) -> FloatArray:
        return np.asarray(self._get(("zero",), lambda: (self.units == 0).astype(np.float64)))

    def unit_sums(self, w: int) -> tuple[np.ndarray, int]:
        """(units, units^2, known, zero) summed over the w days ending at each day."""

        def make() -> tuple[np.ndarray, int]:
            stack = np.stack(
                [self.x0, self.x0 * self.x0, self.valid.astype(np.float64), self.zero()]
            )
            return _window_sum(stack, w, self.lo)

        result: tuple[np.ndarray, int] = self._get(("sums", w), make)
        return result

    def extremes(self, w: int) -> tuple[np.ndarray, int]:
        """(max, -min) of the known units over the w days ending at each day."""

        def make() -> tuple[np.ndarray, int]:
            low = np.float32(-np.inf)
            both = np.stack(
                [np.where(self.valid, self.units, low), np.where(self.valid, -self.units, low)]
            ).astype(np.float32)  # units are float32: their max is exact
            return _window_max(both, w, self.lo)

        result: tuple[np.ndarray, int] = self._get(("extremes", w), make)
        return result

    def ewm(self, alpha: float, span: int) -> tuple[np.ndarray, int]:
        """Decayed sums of (units, known) over the span days ending at each day."""

        def make() -> tuple[np.ndarray, int]:
            pair = np.stack([self.x0, self.valid.astype(np.float64)])
            return _window_sum(pair, span, self.lo, decay=1.0 - alpha)

        result: tuple[np.ndarray, int] = self._get(("ewm", alpha, span), make)
        return result

    def price_sums(self, w: int) -> tuple[np.ndarray, int]:
        """(price, known price) summed over the w days ending at each day."""

        def make() -> tuple[np.ndarray, int]:
            known = ~np.isnan(self.price)
            pstack = np.stack([np.where(known, self.price, 0.0), known.astype(np.float64)])
            return _window_sum(pstack, w, self.lo)

        result: tuple[np.ndarray, int] = self._get(("price", w), make)
        return result

    def last(self, name: str) -> np.ndarray:
        """Position of the latest day up to each day: with a sale (``sale``), with no zero
        (``break``), on promotion (``promo``); -1 before the first."""

        def make() -> np.ndarray:
            hit = {"sale": self.units > 0, "break": ~(self.units == 0), "promo": self.promo}[name]
            return np.maximum.accumulate(np.where(hit, self.idx, -1), axis=1)

        return np.asarray(self._get(("last", name), make))

    def next_promo(self) -> np.ndarray:
        """Position of the first promotion day from each day on; ``width`` when none."""

        def make() -> np.ndarray:
            ahead = np.where(self.promo, self.idx, self.width)[:, ::-1]
            return np.minimum.accumulate(ahead, axis=1)[:, ::-1]

        return np.asarray(self._get(("next_promo",), make))


def chunk_features(
    plan: _Plan,
    data: HistoryArrays,
    grid: Grid,
    targets: IntArray,
    statics: dict[str, FloatArray],
    covariates: dict[str, np.ndarray],
    unused: frozenset[str] = frozenset(),
) -> Iterator[tuple[str, FloatArray]]:
    """Yield (name, values) for the targets of one chunk of SKUs, in the plan's order
    (``unused`` features as zeros, their windows not computed)."""
    windowed = _windowed(plan)
    if not windowed <= unused:
        yield from _chunk_features(plan, data, grid, targets, statics, covariates)
        return
    # Every windowed feature unused (an attribute-only model drops them all): zeros, their
    # windows never computed.
    zeros = np.zeros(len(targets))
    for name, values in _chunk_features(
        plan, data, grid, targets, statics, covariates, windows=False
    ):
        yield name, zeros if name in windowed else values


def _windowed(plan: _Plan) -> frozenset[str]:
    """The plan's features read from the units' windows (sums, extremes, averages)."""
    prefixes = ("roll_", "ewm_", "zero_share_")
    return frozenset(n for n in feature_names(plan) if n.startswith(prefixes))


def _chunk_features(
    plan: _Plan,
    data: HistoryArrays,
    grid: Grid,
    targets: IntArray,
    statics: dict[str, FloatArray],
    covariates: dict[str, np.ndarray],
    *,
    windows: bool = True,
) -> Iterator[tuple[str, FloatArray]]:
    lo, width, units = grid.lo, grid.width, grid.units
    tg = grid.slot[data.codes[targets]]
    tc = data.days[targets] - lo
    e = tc - plan.min_lag  # the last day whose units a target may see

    def at(values: np.ndarray, cols: IntArray) -> FloatArray:
        return _pick(values[np.newaxis], 0, tg, cols)[0]

    def window(res: tuple[np.ndarray, int], cols: IntArray) -> FloatArray:
        return _pick(res[0], res[1], tg, cols)

    for k in plan.lags:
        yield f"lag_{k}", at(units, tc - k)

    sums: dict[int, FloatArray] = {}
    ext: dict[int, FloatArray] = {}
    if windows:
        running = grid.running()
        if running is not None:
            end = window((running, 1), e)
            for w in plan.unit_windows:
                sums[w] = end - window((running, 0), np.maximum(e + 1 - w, 0))
        else:
            for w in plan.unit_windows:
                sums[w] = window(grid.unit_sums(w), e)
        ext = {w: window(grid.extremes(w), e) for w in plan.windows}
    else:  # every windowed feature is unused (zeros): placeholders of the right length
        nan = np.full(len(targets), np.nan)
        sums = {w: (nan, nan, nan, nan) for w in plan.unit_windows}  # type: ignore[misc]
        ext = {w: (nan, nan) for w in plan.windows}  # type: ignore[misc]
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
        for alpha, span in plan.ewm:
            if not windows:
                yield f"ewm_{alpha:g}", np.full(len(targets), np.nan)
                continue
            num, den = window(grid.ewm(alpha, span), e)
            yield f"ewm_{alpha:g}", np.where(den > 0, num / den, np.nan)

        last_sale = at(grid.last("sale"), e)
        since = e - last_sale
        yield "days_since_sale", np.where((last_sale >= 0) & (since < plan.lookback), since, np.nan)
        run = e - at(grid.last("break"), e)
        # An unknown last day (before the SKU's first row, or past as_of) has no known run.
        yield "zero_run", np.where(np.isnan(at(units, e)), np.nan, np.minimum(run, plan.lookback))
        for w in plan.zero_windows:
            _, _, cnt, zeros = sums[w]
            yield f"zero_share_{w}", np.where(cnt > 0, zeros / cnt, np.nan)

        price, paid = grid.price, grid.paid
        p = _price_known(price, paid, tc, e, at)
        yield "price", p
        for w in plan.price_windows:
            ps, pn = window(grid.price_sums(w), e)
            mean = np.where(pn > 0, ps / pn, np.nan)
            yield f"price_ratio_{w}", np.where(mean > 0, p / mean, np.nan)
        before = _price_known(price, paid, tc - 7, e, at)
        yield "price_change_7", np.where(before > 0, p / before - 1.0, np.nan)
        ref = statics["category_price"][data.codes[targets]]
        yield "price_ratio_category", np.where(ref > 0, p / ref, np.nan)

        for c in PROMO_COLUMNS:
            yield c, covariates[c][targets].astype(np.float64)
        last_promo = at(grid.last("promo"), tc)
        since = tc - last_promo
        yield (
            "days_since_promo",
            np.where((last_promo >= 0) & (since < plan.lookback), since, np.nan),
        )
        if plan.promo_lookahead:
            found = at(grid.next_promo(), tc)
            until = found - tc
            soon = (found < width) & (until <= plan.promo_lookahead)
            yield "days_to_promo", np.where(soon, until, np.nan)

    day = data.days[targets]
    calendar = grid._get(("calendar",), lambda: list(_calendar(lo + grid.idx)))
    for name, values in calendar:
        yield name, values[tc]
    for c in CALENDAR_COLUMNS:
        yield c, covariates[c][targets].astype(np.float64)
    sku_code = data.codes[targets]
    for key in CATEGORICAL:
        yield key, statics[key][sku_code]
    yield "age", np.minimum(day - statics["start"][sku_code], plan.required_history)
    for key in ENCODED:
        yield f"te_{key}", statics[f"te_{key}"][sku_code]


def _price_known(
    price: np.ndarray,
    paid: np.ndarray,
    cols: IntArray,
    e: IntArray,
    at: Callable[[np.ndarray, IntArray], FloatArray],
) -> FloatArray:
    """The price of day ``cols`` as known at the origin ``e``: a listed or planned price is
    known ahead, but a price paid on order lines after the origin exists only because a sale
    happened then, so such a day gets the last price known at the origin instead."""
    value = at(price, cols)
    late = (cols > e) & (at(paid, cols) > 0)
    if not late.any():
        return value
    return np.where(late, at(price, e), value)


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
