"""The retrain worker: runs a queued job outside the API process and records its outcome.

``POST /v1/retrain`` queues a job and starts ``salesfc worker JOB_ID`` as a separate process, so
training never blocks or crashes the API and a restart of the API does not lose the job. The
worker sends a heartbeat every few seconds; a worker that dies leaves a job the next request
finds stale and marks failed. Whether the challenger becomes champion is training.promotion's
call (the job's ``force`` overrides it); the job's result holds both scores and the decision.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine

from featurestore.config import Settings
from featurestore.jobs import finish_job, report_progress, start_job
from training.options import train_options
from training.pipeline import train
from training.promotion import gate
from training.registry import Registry

log = structlog.get_logger(__name__)
HEARTBEAT_SECONDS = 5.0
RETRAIN = "retrain"


def spawn_worker(job_id: str, settings: Settings) -> subprocess.Popen[bytes]:
    """Start the worker process for a job; a thread reaps it so no zombie is left behind."""
    env = {**os.environ, "SALESFC_DATABASE_URL": settings.database_url}
    env["SALESFC_MODELS_DIR"] = str(settings.models_dir)
    # The worker trains LightGBM: passive OpenMP waiting (see app/cli) unless set explicitly.
    env.setdefault("OMP_WAIT_POLICY", "passive")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", job_id],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    threading.Thread(target=proc.wait, name=f"reap-{job_id}", daemon=True).start()
    return proc


def run_job(engine: Engine, settings: Settings, job_id: str, params: dict[str, Any]) -> None:
    """Run a retrain job to its end, recording progress and the outcome in the database."""
    start_job(engine, job_id, os.getpid())
    state: dict[str, Any] = {"progress": 0.0, "message": "reading history"}
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            report_progress(engine, job_id, state["progress"], str(state["message"]))

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    steps = {"n": 0}

    def progress(message: str) -> None:
        steps["n"] += 1
        state["progress"] = min(0.95, steps["n"] / (steps["n"] + 4))
        state["message"] = message
        report_progress(engine, job_id, float(state["progress"]), message)

    try:
        choices = dict(params)
        force = bool(choices.pop("force", False))
        # Why the job was started (a drift check records it): kept in params, not an option.
        choices.pop("reason", None)
        options = train_options(choices)
        registry = Registry(settings.models_dir)
        outcome = train(engine, Path(settings.models_dir), options, progress, compare_with=registry)
        assert outcome.comparison is not None  # train was given the registry
        result = gate(registry, outcome.version, outcome.comparison, force)
        stop.set()
        finish_job(
            engine,
            job_id,
            ok=True,
            message=f"trained {outcome.version}; {result['decision']}",
            result=result,
        )
    except Exception as exc:
        stop.set()
        log.exception("retrain_failed", job_id=job_id)
        finish_job(engine, job_id, ok=False, message=f"{type(exc).__name__}: {exc}")
        raise
