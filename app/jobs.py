"""The retrain worker: runs a queued job outside the API process and records its outcome.

``POST /v1/retrain`` queues a job and starts ``salesfc worker JOB_ID`` as a separate process, so
training never blocks or crashes the API and a restart of the API does not lose the job. The
worker sends a heartbeat every few seconds; a worker that dies leaves a job the next request
finds stale and marks failed. The challenger becomes champion only if its backtest score beats
the champion's on the selection metric, unless the job was forced.
"""

from __future__ import annotations

import datetime as dt
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
from training.pipeline import DEFAULT_MODELS, TrainOptions, train
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


def _options(params: dict[str, Any]) -> TrainOptions:
    cutoff = params.get("cutoff")
    return TrainOptions(
        cutoff=dt.date.fromisoformat(cutoff) if cutoff else None,
        models=params.get("models") or list(DEFAULT_MODELS),
        strategy=params.get("strategy", TrainOptions.strategy),
        horizon=int(params.get("horizon", 28)),
        folds=int(params.get("folds", 2)),
        metric=params.get("metric", "rmsse"),
        n_estimators=params.get("n_estimators"),
    )


def gate(
    registry: Registry, version: str, score: float, metric: str, force: bool
) -> dict[str, Any]:
    """Promote the challenger if it beats the champion (lower is better) or if forced."""
    current = registry.champion()
    old_score = None
    if current is not None:
        old = registry.get(current).metrics
        old_score = old.get("selection_score") if old.get("selection_metric") == metric else None
    better = current is None or old_score is None or score < float(old_score)
    promote = force or better
    if promote:
        why = "forced" if force and not better else f"{metric} {score:.4f} vs {old_score}"
        registry.promote(version, reason=why)
    return {
        "challenger": version,
        "challenger_score": score,
        "champion_before": current,
        "champion_score": old_score,
        "metric": metric,
        "promoted": promote,
        "forced": force,
        "champion_after": registry.champion(),
    }


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
        options = _options(params)
        outcome = train(engine, Path(settings.models_dir), options, progress)
        result = gate(
            Registry(settings.models_dir),
            outcome.version,
            outcome.score,
            options.metric,
            bool(params.get("force", False)),
        )
        stop.set()
        verdict = "promoted" if result["promoted"] else "kept the champion"
        finish_job(
            engine, job_id, ok=True, message=f"trained {outcome.version}; {verdict}", result=result
        )
    except Exception as exc:
        stop.set()
        log.exception("retrain_failed", job_id=job_id)
        finish_job(engine, job_id, ok=False, message=f"{type(exc).__name__}: {exc}")
        raise
