"""The contract of the data: the columns of each ingested entity and the frames readers return.

Ingestion validates files against ``ENTITIES``. ``HISTORY_COLUMNS`` and ``PRODUCT_COLUMNS`` are
the only definitions of the frames' columns and dtypes: readers, the serving window cache and
the feature builder all derive theirs from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["str", "int", "float", "date", "datetime", "bool", "json"]


@dataclass(frozen=True)
class Column:
    """One column of an ingested entity, with what `salesfc ingest --help` and the docs say."""

    name: str
    kind: Kind
    required: bool = False
    max_length: int | None = None
    nonnegative: bool = False
    doc: str = ""  # what the column means, and what happens when it is absent or blank
    unit: str = ""
    example: str = ""
    # Personal data: pseudonymised at ingestion, masked in reject files (docs/operations.md).
    private: bool = False


@dataclass(frozen=True)
class Entity:
    """An ingestible entity: its columns, natural key and target table."""

    name: str
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def private(self) -> frozenset[str]:
        """Columns holding personal data."""
        return frozenset(c.name for c in self.columns if c.private)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


_SKU = "The product's stock-keeping unit, as in the products file"

ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity(
            "products",
            "products",
            (
                Column(
                    "sku",
                    "str",
                    True,
                    64,
                    doc="Stock-keeping unit: one product at one location",
                    example="TSHIRT-RED-M",
                ),
                Column("name", "str", max_length=255, doc="Product name", example="T-shirt red M"),
                Column(
                    "item_id",
                    "str",
                    max_length=64,
                    doc="The product that SKUs of several stores share",
                    example="TSHIRT-RED",
                ),
                Column("department", "str", max_length=64, example="APPAREL_1"),
                Column("category", "str", max_length=64, example="APPAREL"),
                Column("brand", "str", max_length=64, example="Acme"),
                Column("store", "str", max_length=64, doc="Store or warehouse", example="CA_1"),
                Column(
                    "region",
                    "str",
                    max_length=16,
                    doc="ISO 3166 country or subdivision: whose public holidays apply",
                    example="US-CA",
                ),
                Column(
                    "attributes",
                    "json",
                    doc="A JSON object; source columns no products column takes are added to it",
                    example='{"colour": "red"}',
                ),
                Column("launch_date", "date", doc="First day on sale", example="2024-03-01"),
                Column(
                    "status",
                    "str",
                    max_length=16,
                    doc="active (default) or discontinued",
                    example="active",
                ),
            ),
            key=("sku",),
        ),
        Entity(
            "orders",
            "order_lines",
            (
                Column("order_id", "str", True, 64, doc="The order's id", example="SO-100234"),
                Column(
                    "line",
                    "int",
                    nonnegative=True,
                    doc="Line within the order; absent: numbered 1, 2, ... in file order",
                    example="1",
                ),
                Column("sku", "str", True, 64, doc=_SKU, example="TSHIRT-RED-M"),
                Column(
                    "customer_id",
                    "str",
                    doc="Stored only as a keyed pseudonym (needs SALESFC_CUSTOMER_ID_KEY)",
                    example="C-48213",
                    private=True,
                ),
                Column(
                    "ordered_at",
                    "datetime",
                    True,
                    doc="When the order was placed; without an offset: SALESFC_TIMEZONE",
                    example="2024-03-05T15:04:00Z",
                ),
                Column(
                    "quantity",
                    "float",
                    doc="Default 1; negative: a return if status is returned, else a cancellation",
                    unit="units",
                    example="2",
                ),
                Column(
                    "unit_price",
                    "float",
                    nonnegative=True,
                    doc="Price of one unit before discount; 0: a zero-price line",
                    unit="currency",
                    example="19.90",
                ),
                Column(
                    "discount",
                    "float",
                    nonnegative=True,
                    doc="Default 0; with --discount amount: the line's discount in currency",
                    unit="fraction 0-1",
                    example="0.1",
                ),
                Column(
                    "status",
                    "str",
                    max_length=16,
                    doc="completed (default), cancelled or returned (stored: also free)",
                    example="completed",
                ),
            ),
            key=("order_id", "line"),
        ),
        Entity(
            "sales",
            "daily_sales",
            (
                Column("sku", "str", True, 64, doc=_SKU, example="TSHIRT-RED-M"),
                Column("date", "date", True, example="2024-03-05"),
                Column(
                    "units",
                    "float",
                    True,
                    nonnegative=True,
                    doc="Units sold that day",
                    unit="units",
                    example="3",
                ),
                Column(
                    "revenue", "float", doc="The day's revenue", unit="currency", example="59.7"
                ),
                Column(
                    "avg_price",
                    "float",
                    nonnegative=True,
                    doc="Average price paid",
                    unit="currency",
                    example="19.90",
                ),
                Column("on_promotion", "bool", doc="Default false", example="true"),
                Column(
                    "in_stock",
                    "bool",
                    doc="false: a stock-out (missing demand, not zero demand)",
                    example="true",
                ),
            ),
            key=("sku", "date"),
        ),
        Entity(
            "prices",
            "prices",
            (
                Column("sku", "str", True, 64, doc=_SKU, example="TSHIRT-RED-M"),
                Column(
                    "valid_from",
                    "date",
                    True,
                    doc="First day of the price (planned prices welcome)",
                    example="2024-03-01",
                ),
                Column(
                    "price",
                    "float",
                    True,
                    nonnegative=True,
                    doc="Shelf price",
                    unit="currency",
                    example="19.90",
                ),
            ),
            key=("sku", "valid_from"),
        ),
        Entity(
            "promotions",
            "promotions",
            (
                Column(
                    "promo_id",
                    "str",
                    max_length=64,
                    doc="Absent or blank: derived from sku, category, dates and kind",
                    example="SPRING24-TEES",
                ),
                Column("sku", "str", max_length=64, doc="The SKU promoted", example="TSHIRT-RED-M"),
                Column(
                    "category",
                    "str",
                    max_length=64,
                    doc="Or a whole category (one of the two is needed)",
                    example="APPAREL",
                ),
                Column("start_date", "date", True, example="2024-04-01"),
                Column("end_date", "date", True, doc="Last day, inclusive", example="2024-04-14"),
                Column(
                    "kind",
                    "str",
                    max_length=32,
                    doc="discount (default), display, mailer, ...",
                    example="discount",
                ),
                Column(
                    "discount_depth",
                    "float",
                    nonnegative=True,
                    doc="Price cut; default 0",
                    unit="fraction 0-1",
                    example="0.2",
                ),
                Column("display", "bool", doc="In-store display; default false", example="false"),
                Column("mailer", "bool", doc="In a mailer; default false", example="true"),
            ),
            key=("promo_id",),
        ),
        Entity(
            "events",
            "calendar_events",
            (
                Column("date", "date", True, example="2024-07-04"),
                Column("name", "str", True, 128, example="Independence Day"),
                Column(
                    "kind",
                    "str",
                    True,
                    32,
                    doc="holiday, sporting, cultural, snap, closed (the shop is closed that day: "
                    "forecast 0, never a training target), ...",
                    example="holiday",
                ),
                Column("region", "str", max_length=16, doc="Blank: every region", example="US"),
            ),
            key=("date", "name", "region"),
        ),
    )
}

ORDER_STATUSES = ("completed", "cancelled", "returned")
# A zero-price line that does not count as demand (featurestore.validate): stored, not a status
# a source may give.
FREE = "free"
STORED_ORDER_STATUSES = (*ORDER_STATUSES, FREE)
PRODUCT_STATUSES = ("active", "discontinued")

# The canonical daily history frame (featurestore.readers.read_frame): one row per SKU per day,
# sorted by (sku, date), RangeIndex. ``units`` is NaN after the frame's as_of date (the future
# rows carry only covariates known in advance: planned prices, promotions and the calendar).
HISTORY_COLUMNS: dict[str, str] = {
    "sku": "object",  # str
    "date": "datetime64[ns]",
    "units": "float32",  # 0 on days without sales, NaN after as_of
    "price": "float32",  # carried forward; NaN before the first known price
    "on_promotion": "int8",
    "promo_depth": "float32",  # 0..1, the deepest promotion running that day
    "promo_display": "int8",
    "promo_mailer": "int8",
    "is_holiday": "int8",  # a public holiday in the SKU's region (or country)
    "is_event": "int8",  # any non-SNAP calendar event in the SKU's region (holidays included)
    "is_snap": "int8",  # a SNAP day in the SKU's region
    "days_to_event": "int16",  # days until the next non-SNAP event, capped at 365
    "days_since_event": "int16",  # days since the last non-SNAP event, capped at 365
}
# The key of a history row; every other column is a numeric value (what array readers carry).
HISTORY_KEY = ("sku", "date")
HISTORY_VALUES: dict[str, str] = {c: t for c, t in HISTORY_COLUMNS.items() if c not in HISTORY_KEY}
# Flags the readers add after the contract's columns. A frame without them (one built by hand)
# means 0 everywhere: every price a list or planned price, no stock-out, no closure.
HISTORY_FLAGS: dict[str, str] = {
    # 1 where ``price`` is not a listed or planned price (prices table) but the price paid on
    # order lines (daily_sales.avg_price), known only on days with a sale: features may read it
    # up to their origin only.
    "price_paid": "int8",
    "stock_out": "int8",  # daily_sales.in_stock is false: the day's units are censored demand
    "closed": "int8",  # a calendar event of kind "closed" in the SKU's region: nothing sells
}

# Static attributes per SKU (featurestore.readers.read_products), one row per SKU, sorted by sku.
PRODUCT_COLUMNS: dict[str, str] = {
    "sku": "object",
    "item_id": "object",
    "department": "object",
    "category": "object",
    "brand": "object",
    "store": "object",
    "region": "object",
    "launch_date": "datetime64[ns]",
    "first_sale_date": "datetime64[ns]",
    "last_sale_date": "datetime64[ns]",
    "status": "object",
}

_KIND_TEXT: dict[str, str] = {
    "str": "text",
    "int": "integer",
    "float": "number",
    "date": "date (YYYY-MM-DD)",
    "datetime": "timestamp (ISO 8601)",
    "bool": "true/false",
    "json": "JSON object",
}


def column_type(col: Column) -> str:
    """The column's type as the help and the docs show it."""
    text = _KIND_TEXT[col.kind]
    if col.max_length is not None:
        text += f", at most {col.max_length}"
    if col.nonnegative:
        text += ", >= 0"
    return text


def column_rows(entity: Entity) -> list[tuple[str, str, str, str, str, str]]:
    """Each column's name, type, unit, whether required, example and notes."""
    return [
        (c.name, column_type(c), c.unit, "yes" if c.required else "", c.example, c.doc)
        for c in entity.columns
    ]


COLUMN_HEADINGS = ("column", "type", "unit", "required", "example", "notes")


def markdown_columns(entity: Entity) -> str:
    """The entity's columns as docs/operations.md shows them (a test keeps the two equal)."""
    lines = [
        "| " + " | ".join(COLUMN_HEADINGS) + " |",
        "|" + "|".join("---" for _ in COLUMN_HEADINGS) + "|",
    ]
    for name, kind, unit, required, example, doc in column_rows(entity):
        cells = (f"`{name}`", kind, unit, required, f"`{example}`" if example else "", doc)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
