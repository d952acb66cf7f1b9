"""Stored inventory plans (one row per SKU), visible only once complete; products' lead times."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, select, update

from featurestore.tables import InventoryPlan, InventoryPlanRow, Product

INSERT_BATCH = 10_000
# The plan's columns, in the order of the export and of `salesfc inventory-plan --out`.
PLAN_COLUMNS = (
    "sku",
    "lead_time_days",
    "review_days",
    "service_level",
    "mean",
    "safety_stock",
    "reorder_point",
    "order_up_to",
    "cold_start",
)
LEAD_TIME_ATTRIBUTE = "lead_time_days"


@dataclass(frozen=True)
class PlanInfo:
    """A complete plan's header."""

    plan_id: str
    model_version: str
    as_of: dt.date
    params: dict[str, Any]
    rows: int


def save_plan(
    engine: Engine,
    frame: pd.DataFrame,
    *,
    model_version: str,
    as_of: dt.date,
    data_token: str,
    params: Mapping[str, Any],
) -> str:
    """Store a whole plan in one transaction: the header turns complete with its last row."""
    plan_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC)
    columns = {c: frame[c].to_numpy() for c in PLAN_COLUMNS}
    records = [
        {
            "plan_id": plan_id,
            "sku": str(columns["sku"][i]),
            "lead_time_days": int(columns["lead_time_days"][i]),
            "review_days": int(columns["review_days"][i]),
            "service_level": float(columns["service_level"][i]),
            "mean": round(float(columns["mean"][i]), 4),
            "safety_stock": round(float(columns["safety_stock"][i]), 4),
            "reorder_point": float(columns["reorder_point"][i]),
            "order_up_to": float(columns["order_up_to"][i]),
            "cold_start": bool(columns["cold_start"][i]),
        }
        for i in range(len(frame))
    ]
    # One transaction: readers see either no plan or the whole of it (status complete).
    with engine.begin() as conn:
        conn.execute(
            insert(InventoryPlan).values(
                plan_id=plan_id,
                model_version=model_version,
                as_of=as_of,
                data_token=data_token,
                params=dict(params),
                status="running",
                rows=0,
                created_at=now,
            )
        )
        for start in range(0, len(records), INSERT_BATCH):
            conn.execute(insert(InventoryPlanRow), records[start : start + INSERT_BATCH])
        conn.execute(
            update(InventoryPlan)
            .where(InventoryPlan.plan_id == plan_id)
            .values(status="complete", rows=len(records), completed_at=dt.datetime.now(dt.UTC))
        )
    return plan_id


def latest_plan(engine: Engine) -> PlanInfo | None:
    """The newest complete plan, or None."""
    with engine.connect() as conn:
        row = conn.execute(
            select(
                InventoryPlan.plan_id,
                InventoryPlan.model_version,
                InventoryPlan.as_of,
                InventoryPlan.params,
                InventoryPlan.rows,
            )
            .where(InventoryPlan.status == "complete")
            .order_by(InventoryPlan.completed_at.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return PlanInfo(row.plan_id, row.model_version, row.as_of, dict(row.params), row.rows)


def page_rows(
    engine: Engine, plan_id: str, *, after: str | None, limit: int
) -> Iterator[tuple[Any, ...]]:
    """The plan's rows (PLAN_COLUMNS) after the cursor SKU, in SKU order, at most ``limit``."""
    cols = [getattr(InventoryPlanRow, c) for c in PLAN_COLUMNS]
    query = select(*cols).where(InventoryPlanRow.plan_id == plan_id)
    if after is not None:
        query = query.where(InventoryPlanRow.sku > after)
    query = query.order_by(InventoryPlanRow.sku).limit(limit)
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=5_000).execute(query):
            yield tuple(row)


def lead_times(engine: Engine, skus: Sequence[str] | None = None) -> dict[str, int]:
    """Products' ``lead_time_days`` attribute (kept from any extra ingest column), by SKU.

    SKUs without one, or with a value that is not a whole number of days >= 1, are absent.
    """
    query = select(Product.sku, Product.attributes).where(Product.attributes.is_not(None))
    wanted = None if skus is None else sorted(set(skus))
    out: dict[str, int] = {}
    with engine.connect() as conn:
        chunks = (
            [None] if wanted is None else [wanted[i : i + 900] for i in range(0, len(wanted), 900)]
        )
        for chunk in chunks:
            q = query if chunk is None else query.where(Product.sku.in_(chunk))
            for sku, attrs in conn.execute(q):
                value = _days(attrs.get(LEAD_TIME_ATTRIBUTE) if isinstance(attrs, dict) else None)
                if value is not None:
                    out[sku] = value
    return out


def _days(value: Any) -> int | None:
    try:
        days = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(days) or days < 1 or days != int(days):
        return None
    return int(days)
