"""Forecast routes: one SKU by GET, many SKUs (and what-if scenarios) by POST."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.deps import ForecastDep, ReadKey, _keys, _matches
from app.errors import (
    DatabaseUnavailable,
    ForbiddenApiKey,
    HorizonOutOfRange,
    InsufficientHistory,
    InvalidRequest,
    MissingApiKey,
    ModelNotReady,
    SkuDiscontinued,
    UnknownSku,
    responses,
)
from app.schemas import ExplainResponse, ForecastRequest, ForecastResponse
from app.services.coalesce import Coalescer
from app.services.forecasting import ForecastService

router = APIRouter(prefix="/v1", tags=["forecasts"], dependencies=[ReadKey])
COMMON = (
    MissingApiKey,
    ForbiddenApiKey,
    ModelNotReady,
    DatabaseUnavailable,
    InvalidRequest,
    SkuDiscontinued,
    InsufficientHistory,
)


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


class _RouteLabel:
    """What the metrics middleware reads from scope["route"] for answers given by the lane."""

    path = "/v1/forecast/{sku}"


class StoredForecastLane:
    """Answers ``GET /v1/forecast/{sku}`` from the worker's cache, in front of FastAPI.

    A cached answer costs less than FastAPI's routing and dependency solving for it, so this
    ASGI middleware serves the cache hits itself: same key check (constant time), same cache
    lookup (``ForecastService.cached_json``: no I/O). Anything else (a miss, a parameter it does
    not parse plainly, a missing or wrong key) goes on to the route, which validates, computes
    and answers errors as usual; the route also documents the endpoint in OpenAPI.
    """

    prefix = "/v1/forecast/"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = self._hit(scope)
            if body is not None:
                scope["route"] = _RouteLabel
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _hit(self, scope: Scope) -> bytes | None:
        path: str = scope["path"]
        if not path.startswith(self.prefix):
            return None
        sku = path[len(self.prefix) :]
        if not sku or "/" in sku or len(sku) > 64:
            return None
        state = scope["app"].state
        service: ForecastService | None = getattr(state, "forecasts", None)
        if service is None:
            return None
        keys = _keys(state.settings, ops=False)
        if keys:
            given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
            if given is None or not _matches(given.decode("latin-1"), keys):
                return None
        horizon = None
        raw_levels = None
        seen = set()
        for name, value in parse_qsl(scope["query_string"].decode("latin-1"), True):
            if name in seen:
                return None
            seen.add(name)
            if name == "horizon":
                if not value.isdigit() or int(value) < 1:
                    return None
                horizon = int(value)
            elif name == "quantiles":
                raw_levels = value
        try:
            levels = _levels(raw_levels)
        except InvalidRequest:
            return None
        return service.cached_json([sku], horizon, levels)


def _levels(raw: str | None) -> list[float] | None:
    if raw is None:
        return None
    try:
        levels = [float(q) for q in raw.split(",") if q.strip()]
    except ValueError as exc:
        raise InvalidRequest(f"quantiles must be numbers, got {raw!r}") from exc
    if not levels or any(not 0 < q < 1 for q in levels):
        raise InvalidRequest("quantiles must lie strictly between 0 and 1")
    return levels


# The forecast routes answer JSON bytes built from the arrays (no per-day pydantic objects);
# `response_model` still documents the body in OpenAPI, and tests validate answers against it.
@router.get(
    "/forecast/{sku}",
    response_model=ForecastResponse,
    response_class=JsonBytes,
    responses=responses(UnknownSku, HorizonOutOfRange, *COMMON),
)
async def forecast_one(
    request: Request,
    service: ForecastDep,
    sku: Annotated[str, Path(max_length=64, examples=["FOODS_3_090_CA_1"])],
    horizon: Annotated[int | None, Query(ge=1, examples=[28])] = None,
    quantiles: Annotated[str | None, Query(examples=["0.1,0.5,0.9"])] = None,
) -> JsonBytes:
    """Expected units per day for one SKU, with quantiles, the model version and data date."""
    levels = _levels(quantiles)
    body = service.cached_json([sku], horizon, levels)
    if body is None:
        # Computed together with the other single-SKU requests waiting (app.services.coalesce).
        body = await coalescer(request, service).forecast_json(sku, horizon, levels)
    return JsonBytes(body)


@router.get(
    "/forecast/{sku}/explain",
    response_model=ExplainResponse,
    responses=responses(UnknownSku, HorizonOutOfRange, *COMMON),
)
async def explain_one(
    request: Request,
    service: ForecastDep,
    sku: Annotated[str, Path(max_length=64, examples=["FOODS_3_090_CA_1"])],
    horizon: Annotated[int | None, Query(ge=1, examples=[28])] = None,
) -> ExplainResponse:
    """Per-day contributions of feature groups, summing with the baseline to the forecast."""
    return await anyio.to_thread.run_sync(
        service.explain, sku, horizon, limiter=compute_limiter(request)
    )


@router.post(
    "/forecast",
    response_model=ForecastResponse,
    response_class=JsonBytes,
    responses=responses(UnknownSku, HorizonOutOfRange, *COMMON),
)
async def forecast_many(request: Request, service: ForecastDep, body: ForecastRequest) -> JsonBytes:
    """Forecasts for up to 1,000 SKUs at once; with a scenario, the what-if and its difference."""
    answer = None
    if body.scenario is None or not (body.scenario.prices or body.scenario.promotions):
        answer = service.cached_json(body.skus, body.horizon, body.quantiles)
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
