"""Store statistics for operators and checks (`salesfc db stats`)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Engine, func, select

from featurestore.tables import Base, DailySales, IngestionLog, Product


def store_stats(engine: Engine) -> dict[str, Any]:
    """Row counts per table, SKU count, first and last sales date and total units."""
    with engine.connect() as conn:
        tables = {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in sorted(Base.metadata.tables.items())
        }
        skus = int(conn.execute(select(func.count()).select_from(Product)).scalar_one())
        first, last, units = conn.execute(
            select(func.min(DailySales.date), func.max(DailySales.date), func.sum(DailySales.units))
        ).one()
    return {
        "tables": tables,
        "skus": skus,
        "first_sales_date": first.isoformat() if first is not None else None,
        "last_sales_date": last.isoformat() if last is not None else None,
        "total_units": float(units or 0.0),
    }


def data_token(engine: Engine) -> str:
    """Changes with every load of data: forecasts cached under an older token are stale."""
    with engine.connect() as conn:
        last = conn.execute(
            select(func.max(IngestionLog.id)).where(IngestionLog.status == "loaded")
        ).scalar_one()
    return f"ingest-{last or 0}"


_LOADED = select(func.max(IngestionLog.id)).where(IngestionLog.status == "loaded")
_STATE = select(_LOADED.scalar_subquery(), select(func.max(DailySales.date)).scalar_subquery())


def store_state(engine: Engine) -> tuple[str, date | None]:
    """The data token and the last sales date, in one round trip (what serving checks)."""
    with engine.connect() as conn:
        last_id, last_day = conn.execute(_STATE).one()
    return f"ingest-{last_id or 0}", last_day
