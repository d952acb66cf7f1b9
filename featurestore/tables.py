"""The feature store's tables (SQLAlchemy 2, typed ``Mapped[]`` columns)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SKU_LEN = 64


def _bytewise(length: int) -> String:
    """A string that PostgreSQL compares bytewise (COLLATE "C"): cheaper to index and sort."""
    return String(length).with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints stably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Product(Base):
    """One SKU: a product at a location (for M5, an item in a store)."""

    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(String(SKU_LEN), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    item_id: Mapped[str | None] = mapped_column(String(SKU_LEN))
    department: Mapped[str | None] = mapped_column(String(64), index=True)
    category: Mapped[str | None] = mapped_column(String(64), index=True)
    brand: Mapped[str | None] = mapped_column(String(64))
    store: Mapped[str | None] = mapped_column(String(64), index=True)
    region: Mapped[str | None] = mapped_column(
        String(16), doc="ISO 3166 country or subdivision code (US, US-CA) for holidays"
    )
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    launch_date: Mapped[dt.date | None] = mapped_column(Date)
    first_sale_date: Mapped[dt.date | None] = mapped_column(Date)
    last_sale_date: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class OrderLine(Base):
    """One line of a customer order, as the platform exported it.

    sku has no foreign key: featurestore.ingest rejects lines of unknown SKUs in the load's own
    transaction and products are never deleted (migration 0003 dropped the per-row check).
    """

    __tablename__ = "order_lines"

    order_id: Mapped[str] = mapped_column(_bytewise(64), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(_bytewise(SKU_LEN))
    customer_id: Mapped[str | None] = mapped_column(_bytewise(64))
    ordered_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    sale_date: Mapped[dt.date] = mapped_column(Date, doc="ordered_at as a day in settings.timezone")
    quantity: Mapped[float] = mapped_column(Float)
    unit_price: Mapped[float | None] = mapped_column(Float)
    discount: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    status: Mapped[str] = mapped_column(_bytewise(16), doc="completed|cancelled|returned|free")

    __table_args__ = (Index("ix_order_lines_sale_date_sku", "sale_date", "sku"),)


class DailySales(Base):
    """Units sold per SKU and day: what training and serving read.

    sku has no foreign key: featurestore.ingest checks a file's SKUs against products once, in
    the load's own transaction, and products are never deleted (migration 0004 dropped the
    per-row check).
    """

    __tablename__ = "daily_sales"

    sku: Mapped[str] = mapped_column(String(SKU_LEN), primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    units: Mapped[float] = mapped_column(Float)
    revenue: Mapped[float | None] = mapped_column(Float)
    avg_price: Mapped[float | None] = mapped_column(Float)
    returned_units: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    on_promotion: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    in_stock: Mapped[bool | None] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(8), doc="orders | direct")

    __table_args__ = (Index("ix_daily_sales_date", "date"),)


class Price(Base):
    """A SKU's shelf price from a date on (planned future prices included)."""

    __tablename__ = "prices"

    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"), primary_key=True)
    valid_from: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    price: Mapped[float] = mapped_column(Float)


class Promotion(Base):
    """A promotion on a SKU or a whole category, past or planned."""

    __tablename__ = "promotions"

    promo_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str | None] = mapped_column(ForeignKey("products.sku"), index=True)
    category: Mapped[str | None] = mapped_column(String(64), index=True)
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(32), default="discount", server_default="discount")
    discount_depth: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    display: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    mailer: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class CalendarEvent(Base):
    """A holiday or custom event (sports final, payday, SNAP day) for a region or everywhere."""

    __tablename__ = "calendar_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    date: Mapped[dt.date] = mapped_column(Date, index=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32), doc="holiday | sporting | cultural | snap | ...")
    region: Mapped[str] = mapped_column(
        String(16), default="", server_default="", doc="'' for every region"
    )
    source: Mapped[str] = mapped_column(String(16), default="custom", server_default="custom")

    __table_args__ = (UniqueConstraint("date", "name", "region", name="uq_calendar_events_key"),)


class IngestionLog(Base):
    """One ingestion of one file: what was read, accepted and rejected."""

    __tablename__ = "ingestion_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    file_name: Mapped[str] = mapped_column(Text)
    entity: Mapped[str] = mapped_column(String(32))
    checksum: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    rows_read: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_accepted: Mapped[int] = mapped_column(BigInteger, default=0)
    rows_rejected: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), doc="loaded | unchanged | failed")
    detail: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    """A background job (retrain); its state lives here so it survives API restarts."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), doc="queued | running | succeeded | failed")
    active: Mapped[bool | None] = mapped_column(
        Boolean, doc="true while queued or running, NULL after: one active job per kind"
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("kind", "active", name="uq_jobs_one_active"),)


class ForecastRun(Base):
    """One forecast-all run; visible to readers only once complete."""

    __tablename__ = "forecast_runs"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128))
    as_of: Mapped[dt.date] = mapped_column(Date)
    data_token: Mapped[str] = mapped_column(
        String(64), doc="featurestore.stats.data_token() when the run read its data"
    )
    horizon: Mapped[int] = mapped_column(Integer)
    quantiles: Mapped[list[float]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), doc="running | complete | failed")
    rows: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ForecastRow(Base):
    """One SKU-day of a forecast run."""

    __tablename__ = "forecast_rows"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("forecast_runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    sku: Mapped[str] = mapped_column(String(SKU_LEN), primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    mean: Mapped[float] = mapped_column(Float)
    quantiles: Mapped[list[float]] = mapped_column(JSON, doc="values in the run's quantile order")
    cold_start: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class InventoryPlan(Base):
    """One nightly inventory plan (`salesfc inventory-plan`); visible only once complete."""

    __tablename__ = "inventory_plans"

    plan_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(128))
    as_of: Mapped[dt.date] = mapped_column(Date)
    data_token: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(
        JSON, doc="default lead_time_days, review_days, service_level"
    )
    status: Mapped[str] = mapped_column(String(16), doc="running | complete | failed")
    rows: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class InventoryPlanRow(Base):
    """One SKU of an inventory plan."""

    __tablename__ = "inventory_plan_rows"

    plan_id: Mapped[str] = mapped_column(
        ForeignKey("inventory_plans.plan_id", ondelete="CASCADE"), primary_key=True
    )
    sku: Mapped[str] = mapped_column(String(SKU_LEN), primary_key=True)
    lead_time_days: Mapped[int] = mapped_column(Integer)
    review_days: Mapped[int] = mapped_column(Integer)
    service_level: Mapped[float] = mapped_column(Float)
    mean: Mapped[float] = mapped_column(Float)
    safety_stock: Mapped[float] = mapped_column(Float)
    reorder_point: Mapped[float] = mapped_column(Float)
    order_up_to: Mapped[float] = mapped_column(Float)
    cold_start: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class SkuDataVersion(Base):
    """A SKU's sales changed outside a file load (``POST /v1/orders``): what serving drops."""

    __tablename__ = "sku_data_versions"

    sku: Mapped[str] = mapped_column(_bytewise(SKU_LEN), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, doc="1 at the first push, +1 at each one")
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class AccuracyScore(Base):
    """A stored forecast run scored against the actuals its days now have, per group."""

    __tablename__ = "accuracy_scores"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("forecast_runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    level: Mapped[str] = mapped_column(
        String(16), primary_key=True, doc="overall | horizon | category | store | demand_class"
    )
    segment: Mapped[str] = mapped_column(
        String(64), primary_key=True, doc="'' overall; the horizon day; the segment's value"
    )
    model_version: Mapped[str] = mapped_column(String(128))
    as_of: Mapped[dt.date] = mapped_column(Date)
    days: Mapped[int] = mapped_column(Integer, doc="days of the run that have actuals")
    rows: Mapped[int] = mapped_column(Integer, doc="SKU-days scored")
    actual_units: Mapped[float] = mapped_column(Float)
    wape: Mapped[float | None] = mapped_column(Float)
    rmsse: Mapped[float | None] = mapped_column(Float)
    bias: Mapped[float | None] = mapped_column(Float)
    mae: Mapped[float | None] = mapped_column(Float)
    coverage: Mapped[float | None] = mapped_column(Float, doc="share of actuals in P10..P90")
    naive_wape: Mapped[float | None] = mapped_column(Float)
    naive_rmsse: Mapped[float | None] = mapped_column(Float)
    naive_bias: Mapped[float | None] = mapped_column(Float)
    naive_mae: Mapped[float | None] = mapped_column(Float)
    scored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class AccuracyDay(Base):
    """One target day of a scored run: additive error sums, for windows of live accuracy."""

    __tablename__ = "accuracy_days"

    run_id: Mapped[str] = mapped_column(
        ForeignKey("forecast_runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    date: Mapped[dt.date] = mapped_column(Date, primary_key=True, index=True)
    model_version: Mapped[str] = mapped_column(String(128))
    as_of: Mapped[dt.date] = mapped_column(Date)
    rows: Mapped[int] = mapped_column(Integer)
    actual: Mapped[float] = mapped_column(Float)
    abs_error: Mapped[float] = mapped_column(Float)
    error: Mapped[float] = mapped_column(Float, doc="sum of forecast - actual")
    naive_abs_error: Mapped[float] = mapped_column(Float)
    naive_error: Mapped[float] = mapped_column(Float)
    inside: Mapped[int] = mapped_column(Integer, doc="rows with P10 <= actual <= P90")
    interval_rows: Mapped[int] = mapped_column(Integer, doc="rows that have a P10..P90 interval")


class DriftEvent(Base):
    """One drift decision (checked, retrain started or skipped, fallback on or off)."""

    __tablename__ = "drift_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    model_version: Mapped[str | None] = mapped_column(String(128))
    job_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
