"""`salesfc serve` and `salesfc worker`: the API server and the retrain worker process."""

from __future__ import annotations

import typer
import uvicorn

from app.jobs import run_job
from app.observability import configure_logging
from featurestore.config import get_settings
from featurestore.db import get_engine
from featurestore.jobs import get_job


def serve(
    host: str | None = typer.Option(None, "--host", help="Default: SALESFC_HOST"),
    port: int | None = typer.Option(None, "--port", help="Default: SALESFC_PORT"),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Default: SALESFC_WORKERS"),
) -> None:
    """Serve the API with uvicorn (uvloop + httptools), OpenAPI docs at /docs."""
    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level.lower(),
    )


def worker(job_id: str = typer.Argument(..., help="The queued job to run")) -> None:
    """Run one queued retrain job (the API starts this; operators rarely need to)."""
    settings = get_settings()
    configure_logging(settings.log_level)
    engine = get_engine()
    job = get_job(engine, job_id)
    try:
        run_job(engine, settings, job.id, job.params or {})
    except Exception as exc:
        raise typer.Exit(1) from exc
