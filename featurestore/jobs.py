"""Background jobs in the database: at most one active job per kind, state that survives restarts.

A job is ``queued`` when requested, ``running`` once a worker claims it, and ends ``succeeded`` or
``failed``. The ``active`` column is true while a job is queued or running and NULL afterwards; a
unique constraint on (kind, active) makes a second active job of a kind impossible on SQLite and
PostgreSQL alike. A running job whose worker stopped sending heartbeats (killed, crashed) is
marked failed by ``reap_stale``.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from featurestore.tables import Job

STALE_AFTER = dt.timedelta(seconds=60)


class JobConflict(RuntimeError):
    """A job of this kind is already queued or running."""

    def __init__(self, active: JobState) -> None:
        super().__init__(f"a {active.kind} job is already {active.status}: {active.id}")
        self.active = active


class UnknownJob(LookupError):
    """No job has this id."""


@dataclass(frozen=True)
class JobState:
    """A job as stored."""

    id: str
    kind: str
    status: str
    progress: float
    message: str | None
    params: dict[str, Any] | None
    result: dict[str, Any] | None
    pid: int | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, job: Job) -> JobState:
        return cls(
            job.id,
            job.kind,
            job.status,
            job.progress,
            job.message,
            job.params,
            job.result,
            job.pid,
            _aware(job.created_at) or _now(),
            _aware(job.started_at),
            _aware(job.heartbeat_at),
            _aware(job.finished_at),
        )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything here is written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _active(engine: Engine, kind: str) -> JobState | None:
    with engine.connect() as conn:
        row = conn.execute(select(Job).where(Job.kind == kind, Job.active.is_(True))).first()
    return None if row is None else JobState.of(Job(**row._mapping))


def create_job(engine: Engine, kind: str, params: dict[str, Any] | None = None) -> JobState:
    """Queue a job; raises JobConflict while another job of the kind is active."""
    reap_stale(engine)
    job_id = str(uuid.uuid4())
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(Job).values(
                    id=job_id,
                    kind=kind,
                    status="queued",
                    active=True,
                    progress=0.0,
                    params=params or {},
                    created_at=_now(),
                )
            )
    except IntegrityError as exc:
        active = _active(engine, kind)
        if active is None:  # the other job ended in between: try once more
            return create_job(engine, kind, params)
        raise JobConflict(active) from exc
    return get_job(engine, job_id)


def get_job(engine: Engine, job_id: str) -> JobState:
    """A job by id."""
    with engine.connect() as conn:
        row = conn.execute(select(Job).where(Job.id == job_id)).first()
    if row is None:
        raise UnknownJob(f"no job {job_id}")
    return JobState.of(Job(**row._mapping))


def list_jobs(engine: Engine, limit: int = 50) -> list[JobState]:
    """The newest jobs first."""
    with engine.connect() as conn:
        rows = conn.execute(select(Job).order_by(Job.created_at.desc()).limit(limit)).all()
    return [JobState.of(Job(**r._mapping)) for r in rows]


def start_job(engine: Engine, job_id: str, pid: int) -> None:
    """A worker claims a queued job."""
    now = _now()
    with engine.begin() as conn:
        done = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="running", pid=pid, started_at=now, heartbeat_at=now)
        ).rowcount
    if done != 1:
        raise UnknownJob(f"job {job_id} is not queued")


def report_progress(engine: Engine, job_id: str, progress: float, message: str) -> None:
    """Progress (0..1) and a message; doubles as the worker's heartbeat."""
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(progress=min(max(progress, 0.0), 1.0), message=message, heartbeat_at=_now())
        )


def finish_job(
    engine: Engine,
    job_id: str,
    *,
    ok: bool,
    message: str,
    result: dict[str, Any] | None = None,
) -> None:
    """End a job, succeeded or failed, and free its kind for the next one."""
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.active.is_(True))
            .values(
                status="succeeded" if ok else "failed",
                active=None,
                progress=1.0 if ok else Job.progress,
                message=message,
                result=result,
                finished_at=_now(),
            )
        )


def _gone(pid: int | None) -> bool:
    """True when a worker process of this host no longer exists."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def reap_stale(engine: Engine, stale_after: dt.timedelta = STALE_AFTER) -> int:
    """Mark active jobs failed whose worker died or stopped sending heartbeats."""
    cutoff = _now() - stale_after
    with engine.begin() as conn:
        rows = conn.execute(
            select(Job.id, Job.status, Job.pid, Job.heartbeat_at, Job.created_at).where(
                Job.active.is_(True)
            )
        ).all()
        stale = [
            r.id
            for r in rows
            if (r.status == "running" and _gone(r.pid))
            or (_aware(r.heartbeat_at) or _aware(r.created_at) or cutoff) < cutoff
        ]
        for job_id in stale:
            conn.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status="failed",
                    active=None,
                    message="the worker stopped (no heartbeat): job abandoned",
                    finished_at=_now(),
                )
            )
    return len(stale)
