"""Forecast routes: one SKU by GET, many SKUs (and what-if scenarios) by POST."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from app.deps import ForecastDep, ReadKey
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


@router.get(
    "/forecast/{sku}",
    response_model=ForecastResponse,
    responses=responses(UnknownSku, HorizonOutOfRange, *COMMON),
)
async def forecast_one(
    service: ForecastDep,
    sku: Annotated[str, Path(max_length=64, examples=["FOODS_3_090_CA_1"])],
    horizon: Annotated[int | None, Query(ge=1, examples=[28])] = None,
    quantiles: Annotated[str | None, Query(examples=["0.1,0.5,0.9"])] = None,
) -> ForecastResponse:
    """Expected units per day for one SKU, with quantiles, the model version and data date."""
    levels = _levels(quantiles)
    return await run_in_threadpool(service.forecast, [sku], horizon, levels)


@router.get(
    "/forecast/{sku}/explain",
    response_model=ExplainResponse,
    responses=responses(UnknownSku, HorizonOutOfRange, *COMMON),
)
async def explain_one(
    service: ForecastDep,
    sku: Annotated[str, Path(max_length=64, examples=["FOODS_3_090_CA_1"])],
    horizon: Annotated[int | None, Query(ge=1, examples=[28])] = None,
) -> ExplainResponse:
    """Per-day contributions of feature groups, summing with the baseline to the forecast."""
    return await run_in_threadpool(service.explain, sku, horizon)


@router.post(
    "/forecast",
    response_model=ForecastResponse,
    responses=responses(UnknownSku, HorizonOutOfRange, *COMMON),
)
async def forecast_many(service: ForecastDep, body: ForecastRequest) -> ForecastResponse:
    """Forecasts for up to 1,000 SKUs at once; with a scenario, the what-if and its difference."""
    return await run_in_threadpool(
        service.forecast, body.skus, body.horizon, body.quantiles, body.scenario
    )
