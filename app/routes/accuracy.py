"""Live accuracy of the stored forecast runs, and the drift decisions taken from it (read key)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from app.deps import EngineDep, ReadKey
from app.errors import ForbiddenApiKey, MissingApiKey, responses
from app.schemas import AccuracyResponse, DriftEventBody, EventsResponse
from app.services.accuracy import accuracy_report
from featurestore import drift_events

router = APIRouter(prefix="/v1", tags=["accuracy"])


@router.get(
    "/accuracy",
    response_model=AccuracyResponse,
    dependencies=[ReadKey],
    responses=responses(MissingApiKey, ForbiddenApiKey),
)
async def get_accuracy(
    engine: EngineDep,
    since: Annotated[dt.date | None, Query(description="runs made from this day on")] = None,
    by: Annotated[
        Literal["horizon", "segment", "model_version"], Query(description="how to group")
    ] = "model_version",
) -> AccuracyResponse:
    """WAPE, RMSSE, bias, MAE and P10-P90 coverage of the stored runs against what happened,
    beside seasonal naive on the same days (scored by `salesfc accuracy`, nightly)."""
    report = await run_in_threadpool(accuracy_report, engine, since=since, by=by)
    return AccuracyResponse.model_validate(report)


@router.get(
    "/events",
    response_model=EventsResponse,
    dependencies=[ReadKey],
    responses=responses(MissingApiKey, ForbiddenApiKey),
)
async def get_events(
    engine: EngineDep,
    since: Annotated[dt.date | None, Query(description="events from this day on")] = None,
    kind: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventsResponse:
    """Drift decisions, newest first: checks, retrains started or skipped, fallback on and off."""
    when = None if since is None else dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    found = await run_in_threadpool(
        drift_events.list_events, engine, since=when, kind=kind, limit=limit
    )
    return EventsResponse(events=[DriftEventBody(**asdict(e)) for e in found])
