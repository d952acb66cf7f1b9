"""`salesfc ingest ENTITY FILE`: load a CSV or Parquet export, or an M5-layout file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from app.cli.progress import Phases
from featurestore.db import get_engine
from featurestore.ingest import (
    IngestError,
    IngestReport,
    TooManyRejects,
    estimate_rows,
    import_m5,
    ingest_file,
)
from featurestore.schema import ENTITIES

console = Console()
err_console = Console(stderr=True)

EXIT_TOO_MANY_REJECTS = 1
EXIT_INVALID = 2
TOP_REASONS = 8


def _mapping(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        target, sep, source = pair.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise typer.BadParameter(f"expected target=source, got {pair!r}", param_hint="--map")
        mapping[target.strip()] = source.strip()
    return mapping


def _as_json(reports: list[IngestReport]) -> str:
    rows = [
        {**dataclasses.asdict(r), "reject_share": r.reject_share, "reject_path": r.reject_path}
        for r in reports
    ]
    return json.dumps(rows, indent=2, default=str)


def _summary(reports: list[IngestReport], as_json: bool = False) -> None:
    if as_json:
        typer.echo(_as_json(reports))
        return
    table = Table(title="ingestion")
    for name in ("entity", "status", "read", "accepted", "rejected", "seconds"):
        table.add_column(
            name, justify="left" if name in ("entity", "status") else "right", overflow="fold"
        )
    for r in reports:
        table.add_row(
            r.entity,
            r.status,
            f"{r.rows_read:,}",
            f"{r.rows_accepted:,}",
            f"{r.rows_rejected:,} ({r.reject_share:.1%})",
            f"{r.seconds:.1f}",
        )
    console.print(table)
    for r in reports:
        if r.status == "unchanged":
            console.print(f"{r.entity}: unchanged, {r.detail}")
        if r.ignored_columns:
            console.print(f"{r.entity}: ignored columns {', '.join(r.ignored_columns)}")
        if r.reasons:
            reasons = Table(title=f"{r.entity}: top reject reasons")
            reasons.add_column("reason", overflow="fold")
            reasons.add_column("rows", justify="right")
            for reason, count in list(r.reasons.items())[:TOP_REASONS]:
                reasons.add_row(reason, f"{count:,}")
            console.print(reasons)
        if r.reject_path is not None:
            console.print(f"{r.entity}: rejected rows written to {r.reject_path}")


def ingest(
    entity: str = typer.Argument(
        ..., help=f"One of {', '.join(ENTITIES)}, or m5 for an M5-layout Parquet file"
    ),
    file: Path = typer.Argument(
        ..., help="CSV or Parquet file", exists=True, dir_okay=False, readable=True
    ),
    map_: list[str] | None = typer.Option(
        None, "--map", help="Column mapping target=source (repeatable), e.g. --map sku=item_code"
    ),
    max_reject: float | None = typer.Option(
        None, "--max-reject", min=0.0, max=1.0, help="Largest reject share that still loads"
    ),
    rejects: Path | None = typer.Option(
        None, "--rejects", help="Where to write rejected rows (default: <file>.rejects.csv)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON for scripts"),
) -> None:
    """Validate and load one file in one transaction; a repeat of a loaded file changes nothing."""
    if entity != "m5" and entity not in ENTITIES:
        err_console.print(f"unknown entity {entity!r}: choose {', '.join(ENTITIES)} or m5")
        raise typer.Exit(EXIT_INVALID)
    mapping = _mapping(map_ or [])
    if entity == "m5" and (mapping or rejects is not None or max_reject is not None):
        err_console.print("--map, --rejects and --max-reject do not apply to m5")
        raise typer.Exit(EXIT_INVALID)
    engine = get_engine()
    try:
        with Phases("ingest", err_console) as phases:
            reading = f"reading {file.name}"
            phases.start(reading, total=None if entity == "m5" else estimate_rows(file))
            state = {"reading": True}

            def advance(rows: int) -> None:
                if not state["reading"]:  # m5: the next entity's rows after a commit
                    phases.start(reading)
                    state["reading"] = True
                phases.advance(rows)

            def step(name: str) -> None:
                state["reading"] = False
                phases.start(name)

            if entity == "m5":
                reports = list(import_m5(engine, file, progress=advance, on_phase=step).values())
            else:
                reports = [
                    ingest_file(
                        engine,
                        entity,
                        file,
                        mapping=mapping or None,
                        max_reject=max_reject,
                        reject_path=rejects,
                        progress=advance,
                        on_phase=step,
                    )
                ]
    except TooManyRejects as exc:
        _summary([exc.report], as_json)
        err_console.print(f"[red]failed:[/red] {exc}")
        raise typer.Exit(EXIT_TOO_MANY_REJECTS) from None
    except IngestError as exc:
        err_console.print(f"[red]failed:[/red] {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    _summary(reports, as_json)
