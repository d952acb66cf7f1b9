"""Order lines pushed by a shop's platform as they happen (key with the ingest scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from app.deps import EngineDep, ForecastDep, IngestKey
from app.errors import (
    DatabaseUnavailable,
    ForbiddenApiKey,
    InvalidLines,
    InvalidRequest,
    MissingApiKey,
    PayloadTooLarge,
    responses,
)
from app.schemas import OrdersRequest, OrdersResponse
from app.services.orders import push_orders

router = APIRouter(prefix="/v1", tags=["orders"])


@router.post(
    "/orders",
    response_model=OrdersResponse,
    dependencies=[IngestKey],
    responses=responses(
        InvalidLines,
        InvalidRequest,
        PayloadTooLarge,
        MissingApiKey,
        ForbiddenApiKey,
        DatabaseUnavailable,
    ),
)
async def post_orders(
    body: OrdersRequest,
    engine: EngineDep,
    forecasts: ForecastDep,
    partial: Annotated[
        bool, Query(description="store the good lines and list the refused ones")
    ] = False,
) -> OrdersResponse:
    """Store order lines in one transaction, idempotent by (order_id, line); all or nothing
    unless ``partial``. The next forecast of every SKU whose daily sales changed reflects them."""
    return await run_in_threadpool(push_orders, engine, forecasts, body.lines, partial=partial)
