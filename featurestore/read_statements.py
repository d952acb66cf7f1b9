"""The SQL the readers run, built once: each statement with and without a SKU list, and dates
as integer day numbers computed by the database (cheaper than Python ``date`` objects)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, Integer, Select, and_, bindparam, func, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.functions import FunctionElement

from featurestore.schema import PRODUCT_COLUMNS
from featurestore.tables import CalendarEvent, DailySales, Price, Product, Promotion

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
IN_CHUNK = 900  # SKUs per IN (...) list: well below SQLite's bound-parameter limit


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


def day_number(value: date) -> int:
    return value.toordinal() - _EPOCH_ORDINAL


def from_day_number(value: int) -> date:
    return date.fromordinal(int(value) + _EPOCH_ORDINAL)


def sku_chunks(skus: list[str] | None) -> Iterator[list[str] | None]:
    if skus is None:
        yield None
        return
    for i in range(0, len(skus), IN_CHUNK):
        yield skus[i : i + IN_CHUNK]


def _known_sales(agg: Any) -> Any:
    # Correlated min/max per product: an index seek on (sku, date) each, where a GROUP BY over
    # daily_sales scans every row (see docs/benchmarks.md, Serving).
    return epoch_day(
        select(agg(DailySales.date))
        .where(DailySales.sku == Product.sku, DailySales.date <= bindparam("as_of"))
        .scalar_subquery()
    )


# Statements are built once, each with and without the SKU filter: on the serving path,
# building a statement (and its cache key) costs more than running it.
_SKUS: BindParameter[list[str]] = bindparam("skus", expanding=True)
AnySelect = Select[*tuple[Any, ...]]


@dataclass(frozen=True)
class Query:
    """A statement over every SKU and the same statement for a list of SKUs (``skus``)."""

    every: AnySelect
    some: AnySelect

    @classmethod
    def over(cls, stmt: AnySelect, column: Any) -> Query:
        return cls(stmt, stmt.where(column.in_(_SKUS)))


PRODUCT_ATTRIBUTES = Query.over(
    select(*(getattr(Product, name) for name in PRODUCT_COLUMNS)), Product.sku
)
PRODUCTS = Query.over(
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
# The sales rows a read needs: rows saying "nothing sold, nothing else known" are the grid's
# default anyway.
_SALES_WHERE = and_(
    DailySales.date >= bindparam("lo"),
    DailySales.date <= bindparam("hi"),
    or_(
        DailySales.units != 0,
        DailySales.avg_price.is_not(None),
        DailySales.on_promotion.is_(True),
        DailySales.in_stock.is_(False),
    ),
)
SALES = Query.over(
    select(
        DailySales.sku,
        epoch_day(DailySales.date),
        DailySales.units,
        DailySales.avg_price,
        DailySales.on_promotion,
        DailySales.in_stock,
    ).where(_SALES_WHERE),
    DailySales.sku,
)
# PostgreSQL's big reads: the same rows as SALES, one CSV text per SKU built by the server
# (``day,units,avg_price,on_promotion,in_stock``; NULL an empty field), so the client parses
# text in bulk (pyarrow) instead of making a Python tuple of objects per row: at M5 scale
# (54M rows) the tuples cost ~3 us a row and left GBs of fragmented heap behind.
SALES_TEXT_FIELDS = ("day", "units", "avg_price", "on_promotion", "in_stock")
_SALES_LINE = func.concat(
    epoch_day(DailySales.date),
    ",",
    DailySales.units,
    ",",
    DailySales.avg_price,  # concat() reads NULL as an empty string
    ",",
    DailySales.on_promotion,
    ",",
    DailySales.in_stock,
)
SALES_TEXT = Query.over(
    select(DailySales.sku, func.string_agg(_SALES_LINE, "\n"))
    .where(_SALES_WHERE)
    .group_by(DailySales.sku),
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
LATEST_AVG_PRICE = select(DailySales.sku, DailySales.avg_price).join(
    _LATEST_AVG_DAY,
    and_(DailySales.sku == _LATEST_AVG_DAY.c.sku, DailySales.date == _LATEST_AVG_DAY.c.day),
)
PRICES = Query.over(
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
PROMOTIONS_BY = {
    (every, categories): _PROMOTIONS.where(
        or_(sku_rule, _PROMOTION_CATEGORIES) if categories else sku_rule
    )
    for every, sku_rule in (
        (True, Promotion.sku.is_not(None)),
        (False, and_(Promotion.sku.is_not(None), Promotion.sku.in_(_SKUS))),
    )
    for categories in (True, False)
}
EVENTS = select(epoch_day(CalendarEvent.date), CalendarEvent.kind, CalendarEvent.region).where(
    CalendarEvent.date >= bindparam("lo"),
    CalendarEvent.date <= bindparam("hi"),
    CalendarEvent.region.in_(bindparam("regions", expanding=True)),
)
ALL_EVENTS = select(epoch_day(CalendarEvent.date), CalendarEvent.kind, CalendarEvent.region).where(
    CalendarEvent.region.is_not(None)
)
LAST_SALES_DATE = select(func.max(DailySales.date))


def fetch(
    conn: Connection, query: Query, chunks: Iterable[list[str] | None], **params: Any
) -> list[Any]:
    """Rows of the query for every chunk of SKUs (None: all SKUs, no filter)."""
    rows: list[Any] = []
    for chunk in chunks:
        if chunk is None:
            rows.extend(conn.execute(query.every, params).all())
        else:
            rows.extend(conn.execute(query.some, {**params, "skus": chunk}).all())
    return rows


# Rows converted to arrays per batch on the big reads: a Python tuple per row costs ~350 bytes,
# 19 GB for the 54M rows of a 30,000-SKU x 1,941-day history held at once (docs/benchmarks.md).
FETCH_BATCH = 250_000


def fetch_batches(
    conn: Connection,
    query: Query,
    chunks: Iterable[list[str] | None],
    batch: int = FETCH_BATCH,
    **params: Any,
) -> Iterator[Sequence[Any]]:
    """The rows of ``fetch`` in batches of at most ``batch`` rows, streamed from the server
    (a server-side cursor on PostgreSQL), so a caller holds one batch of Python rows at a time."""
    for chunk in chunks:
        stmt, values = (
            (query.every, params) if chunk is None else (query.some, {**params, "skus": chunk})
        )
        result = conn.execute(stmt, values, execution_options={"yield_per": batch})
        yield from result.partitions()


def row_columns(rows: Sequence[Any], n: int) -> list[tuple[Any, ...]]:
    if not rows:
        return [() for _ in range(n)]
    return list(zip(*rows, strict=True))
