"""Point-in-time readers: the dense daily history frame training and serving both read.

Every read is a handful of SQLAlchemy Core selects (never one per SKU or per row); the dense
grid, the as-of joins for prices and the interval expansion for promotions are done in numpy.
Dates travel as integer days since 1970-01-01 (computed in SQL), because converting hundreds of
thousands of ``datetime.date`` objects in Python costs more than the whole query.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Connection, Engine, Integer, Select, and_, bindparam, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.functions import FunctionElement

from featurestore.schema import HISTORY_COLUMNS, PRODUCT_COLUMNS
from featurestore.tables import CalendarEvent, DailySales, Price, Product, Promotion

__all__ = [
    "EventRows",
    "last_sales_date",
    "latest_window",
    "read_events",
    "read_frame",
    "read_products",
]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

EVENT_CAP = 365
HOLIDAY_KINDS = ("holiday", "national")
SNAP_KIND = "snap"
DISCONTINUED = "discontinued"

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NONE_HI = np.int64(1 << 40)  # "unknown" in a min(); far beyond any real day number
_KEY_SHIFT = np.int64(1 << 31)  # keeps (day + shift) positive inside a combined sku/day key
_KEY_STRIDE = np.int64(1 << 33)
_IN_CHUNK = 900  # SKUs per IN (...) list: well below SQLite's bound-parameter limit


class epoch_day(FunctionElement[int]):
    """A DATE column as integer days since 1970-01-01, computed by the database."""

    type = Integer()
    inherit_cache = True


@compiles(epoch_day, "sqlite")
def _epoch_day_sqlite(element: epoch_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(julianday({compiler.process(element.clauses, **kw)}) - 2440587.5 AS INTEGER)"


@compiles(epoch_day)
def _epoch_day_default(element: epoch_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)} - DATE '1970-01-01')"


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Fetching ~10^5-10^6 rows allocates as many tuples, and the cyclic collector would walk
    # the young generation again and again (it tripled the time of a full m5 read); nothing
    # created here is cyclic, so reference counting frees it all.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _day(value: date) -> int:
    return value.toordinal() - _EPOCH_ORDINAL


def _from_day(value: int) -> date:
    return date.fromordinal(int(value) + _EPOCH_ORDINAL)


def _chunks(skus: list[str] | None) -> Iterator[list[str] | None]:
    if skus is None:
        yield None
        return
    for i in range(0, len(skus), _IN_CHUNK):
        yield skus[i : i + _IN_CHUNK]


def _known_sales(agg: Any) -> Any:
    # Correlated min/max per product: an index seek on (sku, date) each, where a GROUP BY over
    # daily_sales scans every row (0.7 ms against 330 ms for all of m5_tiny on SQLite).
    return epoch_day(
        select(agg(DailySales.date))
        .where(DailySales.sku == Product.sku, DailySales.date <= bindparam("as_of"))
        .scalar_subquery()
    )


# Statements are built once, each with and without the SKU filter: on the serving path,
# building a statement (and its cache key) cost more than running it.
_SKUS: BindParameter[list[str]] = bindparam("skus", expanding=True)
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class _Query:
    """A statement over every SKU and the same statement for a list of SKUs (``skus``)."""

    every: AnySelect
    some: AnySelect

    @classmethod
    def over(cls, stmt: AnySelect, column: Any) -> _Query:
        return cls(stmt, stmt.where(column.in_(_SKUS)))


_PRODUCT_ATTRIBUTES = _Query.over(
    select(*(getattr(Product, name) for name in PRODUCT_COLUMNS)), Product.sku
)
_PRODUCTS = _Query.over(
    select(
        Product.sku,
        Product.category,
        Product.region,
        epoch_day(Product.launch_date),
        epoch_day(Product.last_sale_date),
        Product.status,
        _known_sales(func.min),
        _known_sales(func.max),
    ),
    Product.sku,
)
_SALES = _Query.over(
    select(
        DailySales.sku,
        epoch_day(DailySales.date),
        DailySales.units,
        DailySales.avg_price,
        DailySales.on_promotion,
    ).where(
        DailySales.date >= bindparam("lo"),
        DailySales.date <= bindparam("hi"),
        # Rows saying "nothing sold, nothing else known" are the grid's default anyway.
        or_(
            DailySales.units != 0,
            DailySales.avg_price.is_not(None),
            DailySales.on_promotion.is_(True),
        ),
    ),
    DailySales.sku,
)
_LATEST_AVG_DAY = (
    select(DailySales.sku.label("sku"), func.max(DailySales.date).label("day"))
    .where(
        DailySales.sku.in_(_SKUS),
        DailySales.date <= bindparam("limit"),
        DailySales.avg_price.is_not(None),
    )
    .group_by(DailySales.sku)
    .subquery()
)
# The last known avg_price per SKU up to a day: seeds the carry-forward of a clipped frame.
_LATEST_AVG_PRICE = select(DailySales.sku, DailySales.avg_price).join(
    _LATEST_AVG_DAY,
    and_(DailySales.sku == _LATEST_AVG_DAY.c.sku, DailySales.date == _LATEST_AVG_DAY.c.day),
)
_PRICES = _Query.over(
    select(Price.sku, epoch_day(Price.valid_from), Price.price).where(
        Price.valid_from <= bindparam("hi")
    ),
    Price.sku,
)
_PROMOTIONS = select(
    Promotion.sku,
    Promotion.category,
    epoch_day(Promotion.start_date),
    epoch_day(Promotion.end_date),
    Promotion.discount_depth,
    Promotion.display,
    Promotion.mailer,
).where(Promotion.start_date <= bindparam("hi"), Promotion.end_date >= bindparam("lo"))
_PROMOTION_CATEGORIES = and_(
    Promotion.sku.is_(None), Promotion.category.in_(bindparam("categories", expanding=True))
)
# By (every SKU?, with category promotions?).
_PROMOTIONS_BY = {
    (every, categories): _PROMOTIONS.where(
        or_(sku_rule, _PROMOTION_CATEGORIES) if categories else sku_rule
    )
    for every, sku_rule in (
        (True, Promotion.sku.is_not(None)),
        (False, and_(Promotion.sku.is_not(None), Promotion.sku.in_(_SKUS))),
    )
    for categories in (True, False)
}
_EVENTS = select(epoch_day(CalendarEvent.date), CalendarEvent.kind, CalendarEvent.region).where(
    CalendarEvent.date >= bindparam("lo"),
    CalendarEvent.date <= bindparam("hi"),
    CalendarEvent.region.in_(bindparam("regions", expanding=True)),
)
_ALL_EVENTS = select(epoch_day(CalendarEvent.date), CalendarEvent.kind, CalendarEvent.region).where(
    CalendarEvent.region.is_not(None)
)
_LAST_SALES_DATE = select(func.max(DailySales.date))


@dataclass(frozen=True)
class EventRows:
    """Every calendar event (day number, kind, region): a reader's cache between ingestions.

    Readers given these skip their events query; the features are the same, because events
    beyond the capped distances change nothing and the region filter is applied in numpy.
    """

    day: I64
    kind: npt.NDArray[np.object_]  # stripped, lower case
    region: npt.NDArray[np.object_]

    @classmethod
    def of(cls, rows: Sequence[Any]) -> EventRows:
        day, kind, region = _columns(rows, 3)
        return cls(
            np.asarray(day, dtype=np.int64),
            np.asarray([(k or "").strip().lower() for k in kind], dtype=object),
            np.asarray(region, dtype=object),
        )


def read_events(engine: Engine) -> EventRows:
    """All calendar events, for readers to reuse until the next ingestion."""
    with engine.connect() as conn:
        return EventRows.of(conn.execute(_ALL_EVENTS).all())


def _fetch(
    conn: Connection, query: _Query, chunks: Iterable[list[str] | None], **params: Any
) -> list[Any]:
    """Rows of the query for every chunk of SKUs (None: all SKUs, no filter)."""
    rows: list[Any] = []
    for chunk in chunks:
        if chunk is None:
            rows.extend(conn.execute(query.every, params).all())
        else:
            rows.extend(conn.execute(query.some, {**params, "skus": chunk}).all())
    return rows


def _lookup(index: pd.Index, values: Sequence[Any]) -> I64:
    """Positions of values in index (-1 where absent)."""
    return np.asarray(index.get_indexer(pd.Index(list(values), dtype=object)), dtype=np.int64)


def _empty_history() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in HISTORY_COLUMNS.items()})


def _object_series(values: Any) -> pd.Series:
    # pandas 3 infers its own string dtype; the contract says object holding Python str.
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def _region_set(region: str | None) -> tuple[str, ...]:
    code = (region or "").strip().upper()
    if not code:
        return ("",)
    country = code.split("-", 1)[0]
    return ("", country) if country == code else ("", country, code)


def last_sales_date(engine: Engine) -> date | None:
    """The latest date in daily_sales, or None for an empty store."""
    with engine.connect() as conn:
        return _last_sales_date(conn)


def _last_sales_date(conn: Connection) -> date | None:
    value: date | None = conn.execute(_LAST_SALES_DATE).scalar_one()
    return value


def read_products(engine: Engine, skus: Sequence[str] | None = None) -> pd.DataFrame:
    """Static attributes per SKU (PRODUCT_COLUMNS), sorted by sku; unknown SKUs are absent."""
    wanted = None if skus is None else sorted(set(skus))
    rows: list[Any] = []
    if wanted != []:
        with engine.connect() as conn:
            rows = _fetch(conn, _PRODUCT_ATTRIBUTES, _chunks(wanted))
    rows.sort(key=lambda r: r[0])
    data: dict[str, pd.Series] = {}
    for i, (name, dtype) in enumerate(PRODUCT_COLUMNS.items()):
        values = [r[i] for r in rows]
        if dtype.startswith("datetime64"):
            data[name] = pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), dtype=dtype)
        else:
            data[name] = pd.Series(np.asarray(values, dtype=object), dtype=dtype)
    return pd.DataFrame(data)


@dataclass
class _Grid:
    """The dense (sku, day) grid: one segment of consecutive days per SKU, in sku order."""

    skus: list[str]
    categories: list[str | None]
    regions: list[str | None]
    first: I64  # first day per SKU
    last: I64  # last day per SKU (inclusive)
    offset: I64  # row where the SKU's segment starts
    sku_idx: I64  # per row
    day: I64  # per row

    @property
    def rows(self) -> int:
        return len(self.day)

    def positions(self, idx: I64, day: I64) -> tuple[I64, BOOL]:
        """Row positions of (sku index, day) pairs and which of them fall inside the grid."""
        safe = np.where(idx >= 0, idx, 0)
        rel = day - self.first[safe]
        inside = (idx >= 0) & (rel >= 0) & (day <= self.last[safe])
        return self.offset[safe] + rel, inside


def read_frame(
    engine: Engine,
    *,
    skus: Sequence[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    as_of: date | None = None,
) -> pd.DataFrame:
    """Dense daily history (HISTORY_COLUMNS) per SKU between start and end, as known at as_of."""
    with _gc_paused(), engine.connect() as conn:
        if as_of is None:
            as_of = _last_sales_date(conn)
            if as_of is None:
                return _empty_history()
        return _read(conn, skus, start, end or as_of, as_of)


def latest_window(
    engine: Engine,
    skus: Sequence[str] | None,
    n_days: int,
    horizon: int = 0,
    as_of: date | None = None,
    events: EventRows | None = None,
) -> pd.DataFrame:
    """The last n_days up to as_of plus `horizon` future rows (units NaN, planned covariates).

    ``events`` (from read_events, for the same data) saves the events query.
    """
    if n_days < 1 or horizon < 0:
        raise ValueError(f"need n_days >= 1 and horizon >= 0, got {n_days} and {horizon}")
    with _gc_paused(), engine.connect() as conn:
        if as_of is None:
            as_of = _last_sales_date(conn)
            if as_of is None:
                return _empty_history()
        start = as_of - timedelta(days=n_days - 1)
        return _read(conn, skus, start, as_of + timedelta(days=horizon), as_of, events)


def _read(
    conn: Connection,
    skus: Sequence[str] | None,
    start: date | None,
    end: date,
    as_of: date,
    events: EventRows | None = None,
) -> pd.DataFrame:
    wanted = None if skus is None else sorted(set(skus))
    if wanted == []:
        return _empty_history()
    grid = _build_grid(conn, wanted, start, end, as_of)
    if grid is None:
        return _empty_history()
    return _fill(conn, grid, start, _day(as_of), every=wanted is None, events=events)


def _build_grid(
    conn: Connection, wanted: list[str] | None, start: date | None, end: date, as_of: date
) -> _Grid | None:
    prows = _fetch(conn, _PRODUCTS, _chunks(wanted), as_of=as_of)
    if not prows:
        return None
    prows.sort(key=lambda r: r[0])
    names = [r[0] for r in prows]
    _, _, _, launch_t, stop_t, status, first_t, last_t = _columns(prows, 8)

    def days(values: tuple[Any, ...]) -> I64:
        return np.array([_NONE_HI if v is None else v for v in values], dtype=np.int64)

    # first/last sale are the ones known at as_of: later sales rows were never read.
    launch, stop, first_sale, last_sale = days(launch_t), days(stop_t), days(first_t), days(last_t)
    discontinued = np.array([s == DISCONTINUED for s in status], dtype=bool)
    first = np.minimum(launch, first_sale)
    if start is not None:
        first = np.maximum(first, _day(start))
    last = np.full(len(names), _day(end), dtype=np.int64)
    stop = np.where(stop == _NONE_HI, last_sale, stop)
    last = np.where(discontinued, np.minimum(last, stop), last)
    unknown = (first >= _NONE_HI) | (discontinued & (stop >= _NONE_HI))
    length = np.where(unknown, 0, np.clip(last - first + 1, 0, None))
    keep = length > 0
    if not keep.any():
        return None
    kept = np.flatnonzero(keep)
    first, last, length = first[kept], last[kept], length[kept]
    offset = np.concatenate(([0], np.cumsum(length)[:-1])).astype(np.int64)
    sku_idx = np.repeat(np.arange(len(kept), dtype=np.int64), length)
    day = first[sku_idx] + (np.arange(len(sku_idx), dtype=np.int64) - offset[sku_idx])
    return _Grid(
        skus=[names[i] for i in kept],
        categories=[prows[i][1] for i in kept],
        regions=[prows[i][2] for i in kept],
        first=first,
        last=last,
        offset=offset,
        sku_idx=sku_idx,
        day=day,
    )


def _columns(rows: Sequence[Any], n: int) -> list[tuple[Any, ...]]:
    if not rows:
        return [() for _ in range(n)]
    return list(zip(*rows, strict=True))


def _as_of_join(src_idx: I64, src_day: I64, src_val: F64, idx: I64, day: I64) -> F64:
    """For each (idx, day), the value of the latest source row of that SKU dated on or before."""
    out = np.full(len(idx), np.nan)
    if len(src_idx) == 0 or len(idx) == 0:
        return out
    src_key = src_idx * _KEY_STRIDE + (src_day + _KEY_SHIFT)
    order = np.argsort(src_key, kind="stable")
    src_key, src_idx, src_val = src_key[order], src_idx[order], src_val[order]
    at = np.searchsorted(src_key, idx * _KEY_STRIDE + (day + _KEY_SHIFT), side="right") - 1
    safe = np.maximum(at, 0)
    hit = (at >= 0) & (src_idx[safe] == idx)
    out[hit] = src_val[safe[hit]]
    return out


def _fill(
    conn: Connection,
    grid: _Grid,
    start: date | None,
    as_of: int,
    *,
    every: bool,
    events: EventRows | None = None,
) -> pd.DataFrame:
    n = grid.rows
    index = pd.Index(grid.skus, dtype=object)
    # Reading every SKU needs no IN list; rows of SKUs outside the grid are dropped by lookup.
    chunks = list(_chunks(None if every else grid.skus))
    lo, hi = int(grid.first.min()), int(grid.last.max())

    units = np.where(grid.day <= as_of, np.float32(0), np.float32(np.nan)).astype(np.float32)
    sale_promo = np.zeros(n, dtype=bool)
    avg_idx = np.empty(0, dtype=np.int64)
    avg_day = np.empty(0, dtype=np.int64)
    avg_val = np.empty(0, dtype=np.float64)
    if lo <= as_of:
        rows = _fetch(
            conn,
            _SALES,
            chunks,
            lo=_from_day(lo),
            hi=_from_day(min(hi, as_of)),
        )
        s_sku, s_day, s_units, s_avg, s_promo = _columns(rows, 5)
        idx = _lookup(index, s_sku)
        day = np.asarray(s_day, dtype=np.int64)
        pos, inside = grid.positions(idx, day)
        units[pos[inside]] = np.asarray(s_units, dtype=np.float32)[inside]
        sale_promo[pos[inside]] = np.asarray(s_promo, dtype=bool)[inside]
        avg = np.asarray(s_avg, dtype=np.float64)  # None -> nan
        known = (idx >= 0) & ~np.isnan(avg)
        avg_idx, avg_day, avg_val = idx[known], day[known], avg[known]

    price = _prices(conn, grid, index, chunks, hi)
    missing = np.isnan(price)
    if missing.any():
        if start is not None:
            seed_idx, seed_val = _avg_price_seed(conn, grid, index, price, start, as_of)
            avg_idx = np.concatenate((avg_idx, seed_idx))
            avg_day = np.concatenate((avg_day, np.full(len(seed_idx), _day(start) - 1)))
            avg_val = np.concatenate((avg_val, seed_val))
        fallback = _as_of_join(avg_idx, avg_day, avg_val, grid.sku_idx[missing], grid.day[missing])
        price[missing] = fallback

    promo_any, depth, display, mailer = _promotions(conn, grid, index, chunks, lo, hi)
    is_holiday, is_event, is_snap, to_event, since_event = _events(conn, grid, lo, hi, events)

    names = np.asarray(grid.skus, dtype=object)
    frame = pd.DataFrame(
        {
            "sku": _object_series(names[grid.sku_idx]),
            "date": grid.day.astype("datetime64[D]").astype("datetime64[ns]"),
            "units": units,
            "price": price.astype(np.float32),
            "on_promotion": (promo_any | sale_promo).astype(np.int8),
            "promo_depth": depth.astype(np.float32),
            "promo_display": display.astype(np.int8),
            "promo_mailer": mailer.astype(np.int8),
            "is_holiday": is_holiday.astype(np.int8),
            "is_event": is_event.astype(np.int8),
            "is_snap": is_snap.astype(np.int8),
            "days_to_event": to_event.astype(np.int16),
            "days_since_event": since_event.astype(np.int16),
        }
    )
    return frame


def _prices(
    conn: Connection, grid: _Grid, index: pd.Index, chunks: list[list[str] | None], hi: int
) -> F64:
    rows = _fetch(conn, _PRICES, chunks, hi=_from_day(hi))
    p_sku, p_day, p_val = _columns(rows, 3)
    idx = _lookup(index, p_sku)
    val = np.asarray(p_val, dtype=np.float64)
    ok = (idx >= 0) & ~np.isnan(val)
    return _as_of_join(
        idx[ok], np.asarray(p_day, dtype=np.int64)[ok], val[ok], grid.sku_idx, grid.day
    )


def _avg_price_seed(
    conn: Connection, grid: _Grid, index: pd.Index, price: F64, start: date, as_of: int
) -> tuple[I64, F64]:
    """The last known avg_price before `start` for SKUs whose first row has no listed price."""
    start_day = _day(start)
    cut = np.isnan(price[grid.offset]) & (grid.first == start_day)
    if not cut.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    limit = _from_day(min(start_day - 1, as_of))
    rows: list[Any] = []
    for chunk in _chunks([grid.skus[i] for i in np.flatnonzero(cut)]):
        rows.extend(conn.execute(_LATEST_AVG_PRICE, {"skus": chunk, "limit": limit}).all())
    s_sku, s_val = _columns(rows, 2)
    return (
        _lookup(index, s_sku),
        np.asarray(s_val, dtype=np.float64),
    )


def _promotions(
    conn: Connection,
    grid: _Grid,
    index: pd.Index,
    chunks: list[list[str] | None],
    lo: int,
    hi: int,
) -> tuple[BOOL, F64, BOOL, BOOL]:
    n = grid.rows
    covered = np.zeros(n, dtype=bool)
    depth = np.zeros(n, dtype=np.float64)
    display = np.zeros(n, dtype=bool)
    mailer = np.zeros(n, dtype=bool)
    categories = sorted({c for c in grid.categories if c is not None})
    params: dict[str, Any] = {"lo": _from_day(lo), "hi": _from_day(hi)}
    rows: list[Any] = []
    for i, chunk in enumerate(chunks):
        with_categories = i == 0 and bool(categories)  # category rows once, not per chunk
        stmt = _PROMOTIONS_BY[chunk is None, with_categories]
        if chunk is not None:
            params["skus"] = chunk
        if with_categories:
            params["categories"] = categories
        rows.extend(conn.execute(stmt, params).all())
    if not rows:
        return covered, depth, display, mailer

    p_sku, p_cat, p_start, p_end, p_depth, p_display, p_mailer = _columns(rows, 7)
    sku_of = _lookup(index, p_sku)
    sku_level = np.array([s is not None for s in p_sku], dtype=bool)
    direct = np.flatnonzero(sku_level & (sku_of >= 0))
    # Category promotions apply to every SKU of the category: join promotion rows to SKUs
    # (a dict of the grid's categories: a pandas merge cost more than the whole query).
    skus_of: dict[str, list[int]] = {}
    for i, category in enumerate(grid.categories):
        if category is not None:
            skus_of.setdefault(category, []).append(i)
    cat_row: list[int] = []
    cat_idx: list[int] = []
    for r in np.flatnonzero(~sku_level).tolist():
        members = skus_of.get(p_cat[r], [])
        cat_row.extend([r] * len(members))
        cat_idx.extend(members)
    row = np.concatenate((direct, np.asarray(cat_row, dtype=np.int64)))
    idx = np.concatenate((sku_of[direct], np.asarray(cat_idx, dtype=np.int64)))
    if len(row) == 0:
        return covered, depth, display, mailer

    first = np.maximum(np.asarray(p_start, dtype=np.int64)[row], grid.first[idx])
    last = np.minimum(np.asarray(p_end, dtype=np.int64)[row], grid.last[idx])
    span = np.clip(last - first + 1, 0, None)
    if span.sum() == 0:
        return covered, depth, display, mailer
    begin = grid.offset[idx] + (first - grid.first[idx])
    # Expand every clipped interval into its row positions without a Python loop.
    ends = np.cumsum(span)
    pos = np.repeat(begin - (ends - span), span) + np.arange(int(ends[-1]), dtype=np.int64)
    covered[pos] = True
    pair_depth = np.nan_to_num(np.asarray(p_depth, dtype=np.float64))[row]
    np.maximum.at(depth, pos, np.repeat(pair_depth, span))
    display[pos[np.repeat(np.asarray(p_display, dtype=bool)[row], span)]] = True
    mailer[pos[np.repeat(np.asarray(p_mailer, dtype=bool)[row], span)]] = True
    return covered, depth, display, mailer


def _events(
    conn: Connection, grid: _Grid, lo: int, hi: int, cached: EventRows | None = None
) -> tuple[BOOL, BOOL, BOOL, I64, I64]:
    region_sets = sorted({_region_set(r) for r in grid.regions})
    codes = sorted({code for rs in region_sets for code in rs})
    if cached is None:
        # Events more than EVENT_CAP days outside the frame cannot change a capped distance, so
        # reading this window gives the same values as reading the whole table.
        params = {
            "lo": _from_day(lo - EVENT_CAP - 1),
            "hi": _from_day(hi + EVENT_CAP + 1),
            "regions": codes,
        }
        cached = EventRows.of(conn.execute(_EVENTS, params).all())
    # With every event (a cache): the ones of other regions match no region set below, and the
    # ones beyond the window cannot change a capped distance (see above).
    e_day, kinds, e_region = cached.day, cached.kind, cached.region
    e_snap = kinds == SNAP_KIND
    e_holiday = np.isin(kinds, HOLIDAY_KINDS)

    days = np.arange(lo, hi + 1, dtype=np.int64)
    width = len(days)
    holiday = np.zeros((len(region_sets), width), dtype=bool)
    event = np.zeros_like(holiday)
    snap = np.zeros_like(holiday)
    to_event = np.full((len(region_sets), width), EVENT_CAP, dtype=np.int64)
    since_event = np.full_like(to_event, EVENT_CAP)
    for g, regions in enumerate(region_sets):  # a handful of regions, not rows
        mine = np.isin(e_region, regions)
        inside = mine & (e_day >= lo) & (e_day <= hi)
        holiday[g, e_day[inside & e_holiday] - lo] = True
        event[g, e_day[inside & ~e_snap] - lo] = True
        snap[g, e_day[inside & e_snap] - lo] = True
        marks = np.unique(e_day[mine & ~e_snap])
        if len(marks):
            nxt = np.searchsorted(marks, days, side="left")
            has = nxt < len(marks)
            to_event[g, has] = marks[nxt[has]] - days[has]
            prv = np.searchsorted(marks, days, side="right") - 1
            has = prv >= 0
            since_event[g, has] = days[has] - marks[prv[has]]
    np.minimum(to_event, EVENT_CAP, out=to_event)
    np.minimum(since_event, EVENT_CAP, out=since_event)

    group_of = {rs: g for g, rs in enumerate(region_sets)}
    sku_group = np.array([group_of[_region_set(r)] for r in grid.regions], dtype=np.int64)
    row_group = sku_group[grid.sku_idx]
    col = grid.day - lo
    return (
        holiday[row_group, col],
        event[row_group, col],
        snap[row_group, col],
        to_event[row_group, col],
        since_event[row_group, col],
    )
