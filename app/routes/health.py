"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from app.deps import EngineDep, ForecastDep, HolderDep, SettingsDep
from app.schemas import Health, Readiness
from app.services.live import LIVE

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


def _database_ok(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(
    engine: EngineDep, holder: HolderDep, settings: SettingsDep, forecasts: ForecastDep
) -> Response:
    """Ready when the database answers and a champion bundle is loaded (503 until then)."""
    database = False
    # Within its own timeout, whatever the database does: a probe still waiting is left to its
    # thread, which the engine's own deadlines end (featurestore.db).
    with anyio.move_on_after(settings.readyz_timeout_s):
        database = await anyio.to_thread.run_sync(_database_ok, engine, abandon_on_cancel=True)
    loaded = holder.current()
    ready = database and loaded is not None
    fallback = None
    snap = forecasts.history.current()
    if loaded is not None and snap is not None:
        event = forecasts.fallback(loaded.version, snap)
        if event is not None:
            fallback = {
                "since": event.at.isoformat(),
                "event_id": event.id,
                "skus": event.detail.get("skus"),
                "baseline": event.detail.get("baseline"),
                "reason": event.detail.get("reason"),
            }
    body = Readiness(
        status="ready" if ready else "not_ready",
        database=database,
        model_version=loaded.version if loaded else None,
        detail=holder.last_error,
        fallback=fallback,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(engine: EngineDep, holder: HolderDep, forecasts: ForecastDep) -> Response:
    """Prometheus metrics of this process (live accuracy and fallback refreshed at most once a
    minute from the store)."""
    loaded = holder.peek()
    if loaded is not None and LIVE.due():
        with anyio.move_on_after(2.0):
            await anyio.to_thread.run_sync(
                LIVE.refresh, engine, loaded.version, forecasts, abandon_on_cancel=True
            )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
