"""Inventory routes: (R, S) decisions per SKU by GET, many by POST, the nightly plan by cursor."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import anyio
import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import EngineDep, ReadKey, on_forecasts
from app.errors import HorizonOutOfRange, NotFound, UnknownSku, responses
from app.routes.forecast import COMMON, JsonBytes, compute_limiter
from app.schemas import (
    PRINTABLE,
    SERVICE_LEVEL_HIGH,
    SERVICE_LEVEL_LOW,
    SKU_MAX,
    InventoryDecision,
    InventoryItem,
    InventoryRequest,
    InventoryResponse,
)
from app.services.coalesce import InventoryCoalescer
from app.services.inventory import InventoryService
from featurestore import inventory_plans

router = APIRouter(prefix="/v1", tags=["inventory"], dependencies=[ReadKey])
ERRORS = responses(UnknownSku, HorizonOutOfRange, *COMMON)


InventoryDep = Annotated[InventoryService, Depends(on_forecasts("inventory", InventoryService))]


def coalescer(request: Request, service: InventoryService) -> InventoryCoalescer:
    """The worker's coalescer of single-SKU decisions, bound to the running event loop."""
    state = request.app.state
    found: InventoryCoalescer | None = getattr(state, "inventory_coalescer", None)
    loop = asyncio.get_running_loop()
    if found is None or found.service is not service or state.inventory_loop is not loop:
        found = InventoryCoalescer(service, compute_limiter(request))
        state.inventory_coalescer, state.inventory_loop = found, loop
    return found


# Answered as JSON bytes (orjson) like the forecasts; `response_model` documents the body.
@router.get(
    "/inventory/{sku}",
    response_model=InventoryDecision,
    response_class=JsonBytes,
    responses=ERRORS,
)
async def inventory_one(
    request: Request,
    service: InventoryDep,
    sku: Annotated[str, Path(max_length=SKU_MAX, pattern=PRINTABLE, examples=["FOODS_3_090_CA_1"])],
    lead_time_days: Annotated[
        int | None, Query(ge=1, description="default: the product's lead_time_days")
    ] = None,
    review_days: Annotated[int, Query(ge=0)] = 7,
    service_level: Annotated[float, Query(gt=SERVICE_LEVEL_LOW, lt=SERVICE_LEVEL_HIGH)] = 0.95,
    on_hand: Annotated[float, Query(ge=0)] = 0.0,
    on_order: Annotated[float, Query(ge=0)] = 0.0,
) -> JsonBytes:
    """Demand over lead time + review, safety stock, reorder point, order-up-to and the order."""
    item = InventoryItem(
        sku=sku,
        lead_time_days=lead_time_days,
        review_days=review_days,
        service_level=service_level,
        on_hand=on_hand,
        on_order=on_order,
    )
    decision = service.cached(item)
    if decision is None:
        # Computed together with the other single-SKU decisions waiting (app.services.coalesce).
        decision = await coalescer(request, service).decide(item)
    return JsonBytes(orjson.dumps(decision))


@router.post("/inventory", response_model=InventoryResponse, responses=ERRORS)
async def inventory_many(
    request: Request, service: InventoryDep, body: InventoryRequest
) -> dict[str, Any]:
    """Decisions for up to 1,000 SKUs, each with its own lead time, review period and stock."""
    answer: dict[str, Any] = await anyio.to_thread.run_sync(
        service.decide, body.items, limiter=compute_limiter(request)
    )
    return answer


def _lines(rows: list[tuple[Any, ...]], fmt: str) -> Iterator[str]:
    columns = inventory_plans.PLAN_COLUMNS
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([*row[:-1], int(row[-1])])
            if buf.tell() > 1 << 16:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
        return
    for row in rows:
        yield json.dumps(dict(zip(columns, row, strict=True))) + "\n"


@router.get(
    "/inventory-plan",
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "One line per SKU; plan id, model version, as-of date and the next "
            "cursor in the X-Plan-Id, X-Model-Version, X-As-Of and X-Next-Cursor headers",
        },
        **responses(NotFound, *COMMON[:2]),
    },
)
async def plan_export(
    engine: EngineDep,
    format: Annotated[Literal["ndjson", "csv"], Query()] = "ndjson",
    cursor: Annotated[
        str | None, Query(max_length=64, description="the last X-Next-Cursor")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="SKUs per page")] = 1000,
) -> StreamingResponse:
    """The latest complete nightly inventory plan (`salesfc inventory-plan`), by cursor."""
    plan = await run_in_threadpool(inventory_plans.latest_plan, engine)
    if plan is None:
        raise NotFound("no complete inventory plan yet: run `salesfc inventory-plan`")
    rows = await run_in_threadpool(
        lambda: list(inventory_plans.page_rows(engine, plan.plan_id, after=cursor, limit=limit))
    )
    headers = {
        "X-Plan-Id": plan.plan_id,
        "X-Model-Version": plan.model_version,
        "X-As-Of": plan.as_of.isoformat(),
    }
    if len(rows) == limit:
        headers["X-Next-Cursor"] = str(rows[-1][0])
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(_lines(rows, format), media_type=media, headers=headers)
