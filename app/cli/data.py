"""`salesfc demo-data`: load a synthetic retail catalogue through the ordinary ingestion path."""

from __future__ import annotations

import dataclasses
import json
import time

import typer
from rich.console import Console
from rich.table import Table

from app.cli.progress import Phases
from featurestore.db import get_engine
from featurestore.ingest import IngestReport
from featurestore.stats import store_stats
from training.synth import SynthConfig, generate, write_catalogue

console = Console()
err_console = Console(stderr=True)
ENTITY_STEPS = ("products", "events", "prices", "promotions", "sales")


def demo_data(
    skus: int = typer.Option(120, "--skus", min=1, help="Number of SKUs (items x stores)"),
    days: int = typer.Option(730, "--days", min=1, help="Days of sales history, up to yesterday"),
    seed: int = typer.Option(7, "--seed", help="Random seed: the same seed gives the same data"),
    if_empty: bool = typer.Option(
        False, "--if-empty", help="Do nothing when the store already holds products"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the load reports as JSON"),
) -> None:
    """Generate a realistic synthetic catalogue and load it into the feature store."""
    engine = get_engine()
    existing = int(store_stats(engine)["skus"])  # an unmigrated store: app.cli.errors says so
    if if_empty and existing:
        console.print(f"the store already holds {existing:,} products: demo data not loaded")
        return

    config = SynthConfig(n_skus=skus, n_days=days, seed=seed)
    started = time.perf_counter()
    with Phases("demo-data", err_console) as phases:
        phases.start("generating the catalogue")
        catalogue = generate(config)
        phases.start(f"loading {', '.join(ENTITY_STEPS)}", total=len(ENTITY_STEPS))

        def advance(entity: str, report: IngestReport) -> None:
            phases.advance()
            phases.note(f"{entity}: {report.rows_accepted:,} rows", report.seconds)

        reports = write_catalogue(engine, catalogue, progress=advance)

    rejected = sum(r.rows_rejected for r in reports.values())
    failed = rejected or any(r.status == "failed" for r in reports.values())
    if as_json:
        rows = {
            entity: {**dataclasses.asdict(r), "reject_path": r.reject_path}
            for entity, r in reports.items()
        }
        typer.echo(json.dumps(rows, indent=2, default=str))
        if failed:
            raise typer.Exit(1)
        return
    table = Table(title=f"demo data: {skus} SKUs x {days} days, seed {seed}")
    for name, justify in (
        ("entity", "left"),
        ("rows", "right"),
        ("accepted", "right"),
        ("rejected", "right"),
        ("status", "left"),
        ("seconds", "right"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
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
    if failed:
        console.print(f"[red]{rejected:,} generated rows were rejected[/red]: a generator bug")
        raise typer.Exit(1)
