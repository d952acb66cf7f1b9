"""Forecast routes: one SKU by GET, many SKUs (and what-if scenarios) by POST."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from app.deps import ForecastDep, ReadKey
from app.errors import (
    DatabaseError,
    DatabaseUnavailable,
    ForbiddenApiKey,
    HorizonOutOfRange,
    InsufficientHistory,
    InvalidRequest,
    MissingApiKey,
    ModelNotReady,
    PayloadTooLarge,
    SkuDiscontinued,
    UnknownSku,
    responses,
)
from app.schemas import (
    PRINTABLE,
    SKU_MAX,
    ExplainResponse,
    ForecastRequest,
    ForecastResponse,
    parse_quantiles,
)
from app.services.coalesce import Coalescer
from app.services.forecasting import ForecastService

router = APIRouter(prefix="/v1", tags=["forecasts"], dependencies=[ReadKey])
COMMON = (
    MissingApiKey,
    ForbiddenApiKey,
    ModelNotReady,
    DatabaseUnavailable,
    DatabaseError,
    InvalidRequest,
    SkuDiscontinued,
    InsufficientHistory,
)
ERRORS = responses(UnknownSku, HorizonOutOfRange, *COMMON)
POST_ERRORS = responses(UnknownSku, HorizonOutOfRange, PayloadTooLarge, *COMMON)
Sku = Annotated[str, Path(max_length=SKU_MAX, pattern=PRINTABLE, examples=["FOODS_3_090_CA_1"])]
Horizon = Annotated[int | None, Query(ge=1, examples=[28])]

# One compute at a time per worker: under the GIL, requests computed side by side all finish
# late; queued, each finishes as soon as it can (the event loop keeps answering cached ones).
COMPUTE_SLOTS = 1


class JsonBytes(JSONResponse):
    """A body already serialised to JSON; a JSONResponse, so OpenAPI documents the route's
    response_model for it."""

    def render(self, content: Any) -> bytes:
        if not isinstance(content, bytes):
            raise TypeError("JsonBytes takes JSON already serialised to bytes")
        return content


def compute_limiter(request: Request) -> anyio.CapacityLimiter:
    """The worker's limiter for compute routes (made on first use, inside the event loop)."""
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "compute_limiter", None)
    if limiter is None:
        limiter = state.compute_limiter = anyio.CapacityLimiter(COMPUTE_SLOTS)
    return limiter


def coalescer(request: Request, service: ForecastService) -> Coalescer:
    """The worker's coalescer of single-SKU computes, bound to the running event loop."""
    state = request.app.state
    found: Coalescer | None = getattr(state, "coalescer", None)
    loop = asyncio.get_running_loop()
    if found is None or found.service is not service or state.coalescer_loop is not loop:
        found = state.coalescer = Coalescer(service, compute_limiter(request))
        state.coalescer_loop = loop
    return found


# The forecast routes answer JSON bytes built from the arrays (no per-day pydantic objects);
# `response_model` still documents the body in OpenAPI. Cache hits of the GET are mostly
# answered before routing (app.services.lane).
@router.get(
    "/forecast/{sku}", response_model=ForecastResponse, response_class=JsonBytes, responses=ERRORS
)
async def forecast_one(
    request: Request,
    service: ForecastDep,
    sku: Sku,
    horizon: Horizon = None,
    quantiles: Annotated[str | None, Query(examples=["0.1,0.5,0.9"])] = None,
) -> JsonBytes:
    """Expected units per day for one SKU, with quantiles, the model version and data date."""
    levels = parse_quantiles(quantiles)
    body = service.cached_json([sku], horizon, levels)
    if body is None:
        # Computed together with the other single-SKU requests waiting (app.services.coalesce).
        body = await coalescer(request, service).forecast_json(sku, horizon, levels)
    return JsonBytes(body)


@router.get("/forecast/{sku}/explain", response_model=ExplainResponse, responses=ERRORS)
async def explain_one(
    request: Request,
    service: ForecastDep,
    sku: Sku,
    horizon: Horizon = None,
) -> ExplainResponse:
    """Per-day contributions of feature groups, summing with the baseline to the forecast."""
    return await anyio.to_thread.run_sync(
        service.explain, sku, horizon, limiter=compute_limiter(request)
    )


@router.post(
    "/forecast", response_model=ForecastResponse, response_class=JsonBytes, responses=POST_ERRORS
)
async def forecast_many(request: Request, service: ForecastDep, body: ForecastRequest) -> JsonBytes:
    """Forecasts for up to 1,000 SKUs at once; with a scenario, the what-if and its difference."""
    answer = None if body.what_if else service.cached_json(body.skus, body.horizon, body.quantiles)
    if answer is None:
        answer = await anyio.to_thread.run_sync(
            service.forecast_json,
            body.skus,
            body.horizon,
            body.quantiles,
            body.scenario,
            limiter=compute_limiter(request),
        )
    return JsonBytes(answer)
