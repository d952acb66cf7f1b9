"""`salesfc demo-data`: load a synthetic retail catalogue through the ordinary ingestion path."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from featurestore.db import get_engine
from featurestore.ingest import IngestReport
from featurestore.stats import store_stats
from training.synth import SynthConfig, generate, write_catalogue

console = Console()
ENTITY_STEPS = ("products", "events", "prices", "promotions", "sales")


def demo_data(
    skus: int = typer.Option(120, "--skus", min=1, help="Number of SKUs (items x stores)"),
    days: int = typer.Option(730, "--days", min=1, help="Days of sales history, up to yesterday"),
    seed: int = typer.Option(7, "--seed", help="Random seed: the same seed gives the same data"),
    if_empty: bool = typer.Option(
        False, "--if-empty", help="Do nothing when the store already holds products"
    ),
) -> None:
    """Generate a realistic synthetic catalogue and load it into the feature store."""
    engine = get_engine()
    try:
        existing = int(store_stats(engine)["skus"])
    except DBAPIError as exc:
        console.print(f"[red]cannot read the feature store[/red] ({type(exc.orig).__name__});")
        console.print("run [bold]salesfc db upgrade[/bold] first")
        raise typer.Exit(1) from exc
    if if_empty and existing:
        console.print(f"the store already holds {existing:,} products: demo data not loaded")
        return

    config = SynthConfig(n_skus=skus, n_days=days, seed=seed)
    started = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("generating the catalogue", total=len(ENTITY_STEPS) + 1)
        catalogue = generate(config)
        progress.update(task, advance=1, description=f"loading {ENTITY_STEPS[0]}")

        def advance(entity: str, _report: IngestReport) -> None:
            step = ENTITY_STEPS.index(entity) + 1
            following = ENTITY_STEPS[step] if step < len(ENTITY_STEPS) else "done"
            progress.update(task, advance=1, description=f"loading {following}")

        reports = write_catalogue(engine, catalogue, progress=advance)

    table = Table(title=f"demo data: {skus} SKUs x {days} days, seed {seed}")
    for name, justify in (
        ("entity", "left"),
        ("rows", "right"),
        ("accepted", "right"),
        ("rejected", "right"),
        ("status", "left"),
        ("seconds", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for entity, report in reports.items():
        table.add_row(
            entity,
            f"{report.rows_read:,}",
            f"{report.rows_accepted:,}",
            f"{report.rows_rejected:,}",
            report.status,
            f"{report.seconds:.1f}",
        )
    console.print(table)
    dates = catalogue.sales["date"]
    console.print(
        f"sales {dates.min():%Y-%m-%d} .. {dates.max():%Y-%m-%d}, "
        f"{int(catalogue.sales['units'].sum()):,} units; "
        f"done in {time.perf_counter() - started:.1f} s"
    )
    rejected = sum(r.rows_rejected for r in reports.values())
    if rejected or any(r.status == "failed" for r in reports.values()):
        console.print(f"[red]{rejected:,} generated rows were rejected[/red]: a generator bug")
        raise typer.Exit(1)
