"""Point-in-time readers: the dense daily history frame training and serving both read.

Every read is a handful of SQLAlchemy Core selects (``featurestore.read_statements``), never one
per SKU or row; the grid, prices and promotions (``featurestore.history_grid``) and the calendar
(``featurestore.event_reader``) are joined in numpy.
"""

from __future__ import annotations

import gc
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection, Engine, func, select

from featurestore.event_reader import (
    CLOSED_KIND,
    EVENT_CAP,
    HOLIDAY_KINDS,
    SNAP_KIND,
    EventRows,
    grid_events,
    read_events,
)
from featurestore.history_grid import (
    DISCONTINUED,
    HistoryGrid,
    as_of_join,
    avg_price_seed,
    build_grid,
    grid_prices,
    grid_promotions,
    lookup_positions,
)
from featurestore.read_statements import (
    FETCH_BATCH,
    LAST_SALES_DATE,
    PRODUCT_ATTRIBUTES,
    SALES,
    SALES_TEXT,
    SALES_TEXT_FIELDS,
    day_number,
    epoch_day,
    fetch,
    fetch_batches,
    from_day_number,
    row_columns,
    sku_chunks,
)
from featurestore.schema import HISTORY_COLUMNS, HISTORY_FLAGS, HISTORY_VALUES, PRODUCT_COLUMNS
from featurestore.tables import Product

__all__ = [
    "CLOSED_KIND",
    "DISCONTINUED",
    "EVENT_CAP",
    "HOLIDAY_KINDS",
    "SNAP_KIND",
    "EventRows",
    "SkuRange",
    "epoch_day",
    "last_sales_date",
    "latest_window",
    "range_skus",
    "read_events",
    "read_frame",
    "read_products",
    "read_range",
    "read_units",
    "sku_ranges",
]


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Fetching many rows allocates as many tuples, and the cyclic collector would walk the young
    # generation again and again (see docs/benchmarks.md, Training); nothing created here is
    # cyclic, so reference counting frees it all.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _empty_history() -> pd.DataFrame:
    columns = {**HISTORY_COLUMNS, **HISTORY_FLAGS}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})


def _object_series(values: Any) -> pd.Series:
    # pandas 3 infers its own string dtype; the contract says object holding Python str.
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def last_sales_date(engine: Engine) -> date | None:
    """The latest date in daily_sales, or None for an empty store."""
    with engine.connect() as conn:
        return _last_sales_date(conn)


def _last_sales_date(conn: Connection) -> date | None:
    value: date | None = conn.execute(LAST_SALES_DATE).scalar_one()
    return value


def read_products(engine: Engine, skus: Sequence[str] | None = None) -> pd.DataFrame:
    """Static attributes per SKU (PRODUCT_COLUMNS), sorted by sku; unknown SKUs are absent."""
    wanted = None if skus is None else sorted(set(skus))
    rows: list[Any] = []
    if wanted != []:
        with engine.connect() as conn:
            rows = fetch(conn, PRODUCT_ATTRIBUTES, sku_chunks(wanted))
    rows.sort(key=lambda r: r[0])
    data: dict[str, pd.Series] = {}
    for i, (name, dtype) in enumerate(PRODUCT_COLUMNS.items()):
        values = [r[i] for r in rows]
        if dtype.startswith("datetime64"):
            data[name] = pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), dtype=dtype)
        else:
            data[name] = pd.Series(np.asarray(values, dtype=object), dtype=dtype)
    return pd.DataFrame(data)


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
    grid = build_grid(conn, wanted, start, end, as_of)
    if grid is None:
        return _empty_history()
    return _fill(conn, grid, start, day_number(as_of), every=wanted is None, events=events)


def read_units(engine: Engine, *, end: date | None = None) -> pd.DataFrame:
    """Every SKU's daily units up to ``end`` (default: the last sales day) on the history's grid
    (sku, date, units: 0 on days without sales), without the other history columns."""
    with _gc_paused(), engine.connect() as conn:
        as_of = end or _last_sales_date(conn)
        if as_of is None:
            return _empty_history()[["sku", "date", "units"]]
        grid = build_grid(conn, None, None, as_of, as_of)
        if grid is None:
            return _empty_history()[["sku", "date", "units"]]
        index = pd.Index(grid.skus, dtype=object)
        units, _ = _grid_units(conn, grid, index, list(sku_chunks(None)), day_number(as_of))
    names = np.asarray(grid.skus, dtype=object)
    return pd.DataFrame(
        {
            "sku": _object_series(names[grid.sku_idx]),
            "date": grid.day.astype("datetime64[D]").astype(HISTORY_COLUMNS["date"]),
            "units": units.astype(HISTORY_VALUES["units"], copy=False),
        }
    )


@dataclass
class _SalesOnGrid:
    """What the sales rows give the grid besides units: promotion and stock-out flags per grid
    row, and the rows with an average paid price (sku position, day, price) for the prices."""

    promo: np.ndarray
    stock_out: np.ndarray
    avg_idx: np.ndarray
    avg_day: np.ndarray
    avg_val: np.ndarray


def _grid_units(
    conn: Connection, grid: HistoryGrid, index: pd.Index, chunks: list[Any], as_of: int
) -> tuple[np.ndarray, _SalesOnGrid]:
    """Units on the grid (0 up to as_of, NaN after) and what else the sales rows give it.
    The rows arrive in batches, each spread on the grid before the next is read: only the
    rows with a paid price are kept (all the rows' arrays at once were 30 bytes a row, twice
    while concatenated: 3.2 GB at M5 scale)."""
    units = np.where(grid.day <= as_of, np.float32(0), np.float32(np.nan)).astype(np.float32)
    lo, hi = int(grid.first.min()), int(grid.last.max())
    promo = np.zeros(grid.rows, dtype=bool)
    stock_out = np.zeros(grid.rows, dtype=bool)
    if lo > as_of:  # nothing sold yet
        none = np.empty(0, dtype=np.int64)
        return units, _SalesOnGrid(promo, stock_out, none, none, np.empty(0, dtype=np.float64))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    window = {"lo": from_day_number(lo), "hi": from_day_number(min(hi, as_of))}
    for batch in _sales_batches(conn, grid.rows, index, chunks, window):
        pos, inside = grid.positions(batch.idx, batch.day)
        at = pos[inside]
        units[at] = batch.units[inside]
        promo[at] = batch.promo[inside]
        stock_out[at] = batch.stock_out[inside]
        paid = (batch.idx >= 0) & ~np.isnan(batch.avg)
        parts.append((batch.idx[paid], batch.day[paid], batch.avg[paid]))
        del batch, pos, inside, at, paid
    if not parts:
        parts.append((np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)))
    avg_idx, avg_day, avg_val = (np.concatenate([p[i] for p in parts]) for i in range(3))
    del parts
    return units, _SalesOnGrid(promo, stock_out, avg_idx, avg_day, avg_val)


@dataclass
class _SalesBatch:
    """Sales rows as arrays: SKU position in the grid's index (-1: not in it), day number,
    units, average paid price (NaN: none), promotion and stock-out flags."""

    idx: np.ndarray
    day: np.ndarray
    units: np.ndarray
    avg: np.ndarray
    promo: np.ndarray
    stock_out: np.ndarray


def _sales_batches(
    conn: Connection, rows: int, index: pd.Index, chunks: list[Any], window: dict[str, date]
) -> Iterator[_SalesBatch]:
    """The sales rows of the window for the grid's SKUs, a batch at a time.

    The serving path reads a few SKUs: one plain fetch (a server-side cursor costs round
    trips). Big reads stream: on PostgreSQL as one CSV text per SKU parsed in bulk
    (``SALES_TEXT``), elsewhere as batches of rows from a server-side cursor."""
    if rows <= FETCH_BATCH:
        yield _row_batch(index, fetch(conn, SALES, chunks, **window))
    elif conn.dialect.name == "postgresql":
        for texts in fetch_batches(conn, SALES_TEXT, chunks, TEXT_BATCH, **window):
            yield _text_batch(index, texts)
    else:
        for part in fetch_batches(conn, SALES, chunks, FETCH_BATCH, **window):
            yield _row_batch(index, part)


def _row_batch(index: pd.Index, rows: Sequence[Any]) -> _SalesBatch:
    s_sku, s_day, s_units, s_avg, s_promo, s_stock = row_columns(rows, 6)
    return _SalesBatch(
        idx=lookup_positions(index, s_sku),
        day=np.asarray(s_day, dtype=np.int64),
        units=np.asarray(s_units, dtype=np.float32),
        avg=np.asarray(s_avg, dtype=np.float64),  # None -> nan
        promo=np.asarray(s_promo, dtype=bool),
        stock_out=np.fromiter((v is False for v in s_stock), dtype=bool, count=len(s_stock)),
    )


# SKUs per batch of SALES_TEXT rows: ~2,000 days of ~20 bytes each, ~40 MB of text a batch.
TEXT_BATCH = 1_000
_TEXT_TYPES = {
    "day": pa.int64(),
    "units": pa.float64(),
    "avg_price": pa.float64(),
    "on_promotion": pa.bool_(),
    "in_stock": pa.bool_(),
}


def _text_batch(index: pd.Index, rows: Sequence[Any]) -> _SalesBatch:
    """Rows of ``SALES_TEXT`` (sku, its rows as CSV lines) parsed by pyarrow: no Python object
    per sales row. Values equal ``_row_batch``'s: PostgreSQL writes floats in their shortest
    exact form, and NULL as an empty field."""
    names = [r[0] for r in rows]
    texts = [r[1] for r in rows]
    lines = np.array([t.count("\n") + 1 for t in texts], dtype=np.int64)
    data = "\n".join(texts).encode()
    del texts
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=list(SALES_TEXT_FIELDS)),
        parse_options=pacsv.ParseOptions(quote_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types=_TEXT_TYPES, true_values=["t"], false_values=["f"], null_values=[""]
        ),
    )
    del data
    if table.num_rows != int(lines.sum()):
        raise RuntimeError(f"sales text parsed into {table.num_rows} rows, not {lines.sum()}")

    def column(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    in_stock = table.column("in_stock")
    return _SalesBatch(
        idx=np.repeat(lookup_positions(index, names), lines),
        day=column("day"),
        units=column("units").astype(np.float32),
        avg=table.column("avg_price").fill_null(np.nan).to_numpy(),
        promo=table.column("on_promotion").fill_null(False).to_numpy(),
        stock_out=pc.equal(in_stock, False).fill_null(False).to_numpy(),
    )


def _fill(
    conn: Connection,
    grid: HistoryGrid,
    start: date | None,
    as_of: int,
    *,
    every: bool,
    events: EventRows | None = None,
) -> pd.DataFrame:
    index = pd.Index(grid.skus, dtype=object)
    # Reading every SKU needs no IN list; rows of SKUs outside the grid are dropped by lookup.
    chunks = list(sku_chunks(None if every else grid.skus))
    lo, hi = int(grid.first.min()), int(grid.last.max())

    units, sales = _grid_units(conn, grid, index, chunks, as_of)
    sale_promo, stock_out = sales.promo, sales.stock_out
    avg_idx, avg_day, avg_val = sales.avg_idx, sales.avg_day, sales.avg_val
    del sales

    price = grid_prices(conn, grid, index, chunks, hi)
    missing = np.isnan(price)
    # Without a listed price the day's price is the one paid on order lines (carried forward).
    price_paid = missing.copy()
    if missing.any():
        if start is not None:
            seed_idx, seed_val = avg_price_seed(conn, grid, index, price, start, as_of)
            avg_idx = np.concatenate((avg_idx, seed_idx))
            avg_day = np.concatenate((avg_day, np.full(len(seed_idx), day_number(start) - 1)))
            avg_val = np.concatenate((avg_val, seed_val))
        fallback = as_of_join(avg_idx, avg_day, avg_val, grid.sku_idx[missing], grid.day[missing])
        price[missing] = fallback
        del fallback
    del missing, avg_idx, avg_day, avg_val

    promo_any, depth, display, mailer = grid_promotions(conn, grid, index, chunks, lo, hi)
    is_holiday, is_event, is_snap, to_event, since_event, closed = grid_events(
        conn, grid, lo, hi, events
    )

    values: dict[str, np.ndarray] = {
        "units": units,
        "price": price,
        "on_promotion": promo_any | sale_promo,
        "promo_depth": depth,
        "promo_display": display,
        "promo_mailer": mailer,
        "is_holiday": is_holiday,
        "is_event": is_event,
        "is_snap": is_snap,
        "days_to_event": to_event,
        "days_since_event": since_event,
    }
    del units, promo_any, sale_promo, depth, display, mailer
    del is_holiday, is_event, is_snap, to_event, since_event
    names = np.asarray(grid.skus, dtype=object)
    columns: dict[str, Any] = {
        "sku": _object_series(names[grid.sku_idx]),
        "date": grid.day.astype("datetime64[D]").astype(HISTORY_COLUMNS["date"]),
    }
    # In the contract's order and dtypes (featurestore.schema.HISTORY_VALUES), each grid array
    # let go once converted.
    for c, t in HISTORY_VALUES.items():
        columns[c] = values.pop(c).astype(t, copy=False)
    columns["price_paid"] = (price_paid & ~np.isnan(price)).astype(HISTORY_FLAGS["price_paid"])
    del price, price_paid
    columns["stock_out"] = stock_out.astype(HISTORY_FLAGS["stock_out"])
    columns["closed"] = closed.astype(HISTORY_FLAGS["closed"])
    # Not consolidated into 2-D blocks: that would copy every column once more at the peak.
    return pd.DataFrame(columns, copy=False)


# -- reads by SKU range: what a worker of a cluster reads for its own partition -----------------


@dataclass(frozen=True)
class SkuRange:
    """The SKUs ``first <= sku < stop`` (``stop`` None: to the end), in the database's byte order.

    A partition is described by its bounds only: the worker reads its SKU names and history
    itself, so no process ever holds the whole catalogue's history.
    """

    first: str
    stop: str | None
    skus: int  # how many SKUs the range held when it was cut (active ones with active_only)


def _sku_key(conn: Connection) -> Any:
    # Byte order on both backends: PostgreSQL's default collation may sort "A_2" and "A1" the
    # other way round from Python and SQLite, and a range must mean the same everywhere.
    return Product.sku.collate("C") if conn.dialect.name == "postgresql" else Product.sku


def _range_filter(conn: Connection, active_only: bool) -> list[Any]:
    return [Product.status != DISCONTINUED] if active_only else []


def sku_ranges(engine: Engine, parts: int, *, active_only: bool = False) -> list[SkuRange]:
    """The catalogue cut into at most ``parts`` ranges of consecutive SKUs of (nearly) equal size.

    Only the bounds leave the database: one row per range (row_number over the SKU index).
    """
    if parts < 1:
        raise ValueError(f"need at least one partition, got {parts}")
    with engine.connect() as conn:
        where = _range_filter(conn, active_only)
        total = int(
            conn.execute(select(func.count()).select_from(Product).where(*where)).scalar_one()
        )
        if total == 0:
            return []
        size = math.ceil(total / parts)
        key = _sku_key(conn)
        numbered = (
            select(Product.sku.label("sku"), func.row_number().over(order_by=key).label("rn"))
            .where(*where)
            .subquery()
        )
        firsts = [
            str(r[0])
            for r in conn.execute(
                select(numbered.c.sku)
                .where((numbered.c.rn - 1) % size == 0)
                .order_by(numbered.c.rn)
            )
        ]
    counts = [min(size, total - i * size) for i in range(len(firsts))]
    stops: list[str | None] = [*firsts[1:], None]
    return [SkuRange(f, s, n) for f, s, n in zip(firsts, stops, counts, strict=True)]


def range_skus(engine: Engine, part: SkuRange, *, active_only: bool = False) -> list[str]:
    """The SKU names of one range, in byte order."""
    with engine.connect() as conn:
        key = _sku_key(conn)
        where = [key >= part.first, *_range_filter(conn, active_only)]
        if part.stop is not None:
            where.append(key < part.stop)
        return [str(r[0]) for r in conn.execute(select(Product.sku).where(*where).order_by(key))]


def read_range(
    engine: Engine,
    part: SkuRange,
    *,
    start: date | None = None,
    end: date | None = None,
    as_of: date | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One range's dense history (as read_frame) and its products: a worker's own partition."""
    skus = range_skus(engine, part)
    if not skus:
        return _empty_history(), read_products(engine, [])
    return read_frame(engine, skus=skus, start=start, end=end, as_of=as_of), read_products(
        engine, skus
    )
