"""Totals: a category, store, category x store or the whole catalogue, coherent with its SKUs."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request

from app.deps import ReadKey, on_forecasts
from app.errors import HorizonOutOfRange, InvalidRequest, NotFound, responses
from app.routes.forecast import COMMON, Horizon, compute_limiter
from app.schemas import PRINTABLE, AggregateKeys, AggregateResponse, parse_quantiles
from app.services.aggregate import AggregateService
from training.aggregate import SEPARATOR, TOTAL_KEY, Level

router = APIRouter(prefix="/v1", tags=["totals"], dependencies=[ReadKey])
ERRORS = responses(NotFound, HorizonOutOfRange, *COMMON)
LevelQuery = Annotated[
    Level, Query(description="total, category, store or category_store", examples=["category"])
]


AggregateDep = Annotated[AggregateService, Depends(on_forecasts("aggregate", AggregateService))]


@router.get("/forecast/aggregate", response_model=AggregateResponse, responses=ERRORS)
async def aggregate(
    request: Request,
    service: AggregateDep,
    level: LevelQuery,
    key: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=PRINTABLE,
            description=f"the group: a category, a store, or category{SEPARATOR}store; "
            "not needed for the total",
            examples=["FOODS"],
        ),
    ] = None,
    horizon: Horizon = None,
    quantiles: Annotated[str | None, Query(examples=["0.1,0.5,0.9"])] = None,
) -> dict[str, Any]:
    """Per day, the total's mean (the sum of its SKUs' means) and quantiles from joint paths."""
    if key is None:
        if level != "total":
            raise InvalidRequest(f"key is required at level {level}")
        key = TOTAL_KEY
    levels = parse_quantiles(quantiles)
    answer: dict[str, Any] = await anyio.to_thread.run_sync(
        service.total, level, key, horizon, levels, limiter=compute_limiter(request)
    )
    return answer


@router.get("/forecast/aggregate/keys", response_model=AggregateKeys, responses=ERRORS)
async def aggregate_keys(service: AggregateDep, level: LevelQuery) -> dict[str, Any]:
    """The groups of a level and how many active SKUs each holds."""
    groups = await anyio.to_thread.run_sync(service.groups, level)
    return {"level": level, "keys": [{"key": k, "skus": len(v)} for k, v in groups.items()]}
