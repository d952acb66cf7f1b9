"""`salesfc inventory-plan`: the nightly (R, S) plan of the whole catalogue from the champion."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.console import Console

from app.cli.training import ENGINE, SCHEDULER
from app.services.inventory import run_inventory_plan
from featurestore.config import get_settings
from featurestore.db import get_engine
from training.engine.select import batch_forecaster
from training.inventory import check_service_level
from training.predict import write_forecasts
from training.registry import Registry, RegistryError

console = Console(stderr=True)


def inventory_plan(
    out: Path = typer.Option(..., "--out", help="The plan as .csv or .parquet"),
    as_of: str | None = typer.Option(None, "--as-of", help="Origin date (default: last sales day)"),
    lead_time_days: int = typer.Option(
        7, "--lead-time-days", min=1, help="Lead time of SKUs without a lead_time_days attribute"
    ),
    review_days: int = typer.Option(7, "--review-days", min=0, help="Days between two orders"),
    service_level: float = typer.Option(
        0.95, "--service-level", help="Cycle service level, strictly between 0.5 and 0.999"
    ),
    store: bool = typer.Option(
        True, "--store/--no-store", help="Store the plan for GET /v1/inventory-plan"
    ),
    engine: str = ENGINE,
    scheduler: str | None = SCHEDULER,
) -> None:
    """Order-up-to level, reorder point and safety stock of every active SKU (one file)."""
    try:
        check_service_level(service_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--service-level") from exc
    if out.suffix not in (".csv", ".parquet"):
        raise typer.BadParameter("use a .csv or .parquet file", param_hint="--out")
    try:
        origin = dt.date.fromisoformat(as_of) if as_of else None
    except ValueError as exc:
        raise typer.BadParameter(f"{as_of!r} is not an ISO date", param_hint="--as-of") from exc
    settings = get_settings()
    try:
        with batch_forecaster(engine, scheduler, settings.database_url) as forecast:
            result = run_inventory_plan(
                get_engine(),
                Registry(settings.models_dir),
                as_of=origin,
                lead_time_days=lead_time_days,
                review_days=review_days,
                service_level=service_level,
                store=store,
                forecast=forecast,
            )
    except (RegistryError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    write_forecasts(result.frame, out)
    where = [str(out)] + ([f"plan {result.plan_id}"] if result.plan_id else [])
    console.print(
        f"{len(result.frame):,} SKUs at service level {service_level:g} from "
        f"{result.model_version} (as of {result.as_of}): {', '.join(where)}"
    )
