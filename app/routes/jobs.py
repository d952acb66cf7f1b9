"""Retrain jobs: start one (ops key), follow its progress."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.deps import EngineDep, OpsKey, ReadKey, SettingsDep
from app.errors import Conflict, ForbiddenApiKey, MissingApiKey, NotFound, responses
from app.jobs import RETRAIN, spawn_worker
from app.schemas import PRINTABLE, JobInfo, RetrainRequest
from featurestore import jobs

router = APIRouter(prefix="/v1", tags=["jobs"])


def _info(state: jobs.JobState) -> JobInfo:
    data = asdict(state)
    data.pop("pid")
    data.pop("heartbeat_at")
    return JobInfo(**data)


@router.post(
    "/retrain",
    status_code=202,
    response_model=JobInfo,
    dependencies=[OpsKey],
    responses=responses(Conflict, MissingApiKey, ForbiddenApiKey),
)
async def retrain(
    engine: EngineDep, settings: SettingsDep, body: RetrainRequest | None = None
) -> JSONResponse:
    """Queue a retrain and start its worker; 409 with the running job's id if one is active."""
    params = (body or RetrainRequest()).model_dump(mode="json")
    try:
        state = await run_in_threadpool(jobs.create_job, engine, RETRAIN, params)
    except jobs.JobConflict as exc:
        raise Conflict(f"{exc}; follow it at /v1/jobs/{exc.active.id}") from exc
    spawn_worker(state.id, settings)
    info = _info(state)
    return JSONResponse(
        info.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{state.id}"}
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobInfo,
    dependencies=[ReadKey],
    responses=responses(NotFound, MissingApiKey, ForbiddenApiKey),
)
async def get_job(
    engine: EngineDep, job_id: Annotated[str, Path(max_length=36, pattern=PRINTABLE)]
) -> JobInfo:
    """A job's status, progress and, once ended, its outcome (scores, promotion)."""

    def fetch() -> jobs.JobState:
        jobs.reap_stale(engine)
        return jobs.get_job(engine, job_id)

    try:
        return _info(await run_in_threadpool(fetch))
    except jobs.UnknownJob as exc:
        raise NotFound(str(exc)) from exc
