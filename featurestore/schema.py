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
    """One column of an ingested entity."""

    name: str
    kind: Kind
    required: bool = False
    max_length: int | None = None
    nonnegative: bool = False


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

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity(
            "products",
            "products",
            (
                Column("sku", "str", True, 64),
                Column("name", "str", max_length=255),
                Column("item_id", "str", max_length=64),
                Column("department", "str", max_length=64),
                Column("category", "str", max_length=64),
                Column("brand", "str", max_length=64),
                Column("store", "str", max_length=64),
                Column("region", "str", max_length=16),
                Column("attributes", "json"),
                Column("launch_date", "date"),
                Column("status", "str", max_length=16),
            ),
            key=("sku",),
        ),
        Entity(
            "orders",
            "order_lines",
            (
                Column("order_id", "str", True, 64),
                Column("line", "int", True, nonnegative=True),
                Column("sku", "str", True, 64),
                Column("customer_id", "str", max_length=64),
                Column("ordered_at", "datetime", True),
                Column("quantity", "float", True),
                Column("unit_price", "float", nonnegative=True),
                Column("discount", "float", nonnegative=True),
                Column("status", "str", max_length=16),
            ),
            key=("order_id", "line"),
        ),
        Entity(
            "sales",
            "daily_sales",
            (
                Column("sku", "str", True, 64),
                Column("date", "date", True),
                Column("units", "float", True, nonnegative=True),
                Column("revenue", "float"),
                Column("avg_price", "float", nonnegative=True),
                Column("on_promotion", "bool"),
                Column("in_stock", "bool"),
            ),
            key=("sku", "date"),
        ),
        Entity(
            "prices",
            "prices",
            (
                Column("sku", "str", True, 64),
                Column("valid_from", "date", True),
                Column("price", "float", True, nonnegative=True),
            ),
            key=("sku", "valid_from"),
        ),
        Entity(
            "promotions",
            "promotions",
            (
                Column("promo_id", "str", True, 64),
                Column("sku", "str", max_length=64),
                Column("category", "str", max_length=64),
                Column("start_date", "date", True),
                Column("end_date", "date", True),
                Column("kind", "str", max_length=32),
                Column("discount_depth", "float", nonnegative=True),
                Column("display", "bool"),
                Column("mailer", "bool"),
            ),
            key=("promo_id",),
        ),
        Entity(
            "events",
            "calendar_events",
            (
                Column("date", "date", True),
                Column("name", "str", True, 128),
                Column("kind", "str", True, 32),
                Column("region", "str", max_length=16),
            ),
            key=("date", "name", "region"),
        ),
    )
}

ORDER_STATUSES = ("completed", "cancelled", "returned")
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
