"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text

from app.deps import EngineDep, HolderDep, SettingsDep
from app.schemas import Health, Readiness

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
async def readyz(engine: EngineDep, holder: HolderDep, settings: SettingsDep) -> Response:
    """Ready when the database answers and a champion bundle is loaded (503 until then)."""
    database = False
    # Within its own timeout, whatever the database does: a probe still waiting is left to its
    # thread, which the engine's own deadlines end (featurestore.db).
    with anyio.move_on_after(settings.readyz_timeout_s):
        database = await anyio.to_thread.run_sync(_database_ok, engine, abandon_on_cancel=True)
    loaded = holder.current()
    ready = database and loaded is not None
    body = Readiness(
        status="ready" if ready else "not_ready",
        database=database,
        model_version=loaded.version if loaded else None,
        detail=holder.last_error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
