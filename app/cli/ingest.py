"""`salesfc ingest ENTITY FILE`: load a CSV or Parquet export, or an M5-layout file."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

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
from featurestore.schema import ENTITIES, Entity, column_rows
from featurestore.validate import SourceOptions

console = Console()
err_console = Console(stderr=True)

EXIT_TOO_MANY_REJECTS = 1
EXIT_INVALID = 2
TOP_REASONS = 8


class DiscountUnit(StrEnum):
    fraction = "fraction"
    amount = "amount"


def _columns_text(entity: Entity) -> str:
    """The entity's columns: name, type, unit, required and example, then the notes below."""
    rows = column_rows(entity)
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    unit_w = max(len(r[2]) for r in rows)
    lines = [f"{entity.name} columns (name, type, required, unit, example; notes below):"]
    for name, kind, unit, required, example, doc in rows:
        head = f"  {name:<{widths[0]}}  {kind:<{widths[1]}}  "
        head += f"{'required' if required else 'optional'}  "
        if unit_w:
            head += f"{unit:<{unit_w}}  "
        lines.append((head + (f"e.g. {example}" if example else "")).rstrip())
        if doc:
            lines.append(" " * 6 + doc)
    return "\n".join(lines)


class IngestCommand(TyperCommand):
    """`salesfc ingest ENTITY --help` ends with ENTITY's columns (every entity's without one)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # --help is eager: it prints before the arguments are parsed, so look for the entity here.
        ctx.meta["ingest_entity"] = next((a for a in args if a in ENTITIES), None)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        super().format_help(ctx, formatter)
        named = ctx.meta.get("ingest_entity")
        for entity in [ENTITIES[named]] if named else ENTITIES.values():
            console.print(_columns_text(entity), markup=False, highlight=False, soft_wrap=True)
            console.print()
        console.print(
            "Source columns match whatever their case and separators (UnitPrice, unit price: "
            "unit_price); --map names the others. docs/operations.md has these tables."
        )


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
        if r.mixed is not None:
            console.print(f"{r.entity}: {r.mixed.describe()}")
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
    force: bool = typer.Option(
        False, "--force", help="Load the file even if the same content was loaded before"
    ),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", help="A source column to read as if absent (repeatable)"
    ),
    discount: DiscountUnit = typer.Option(
        DiscountUnit.fraction,
        "--discount",
        help="orders: discount as a fraction of the price, or the line's amount in currency",
    ),
    zero_price_demand: bool = typer.Option(
        False,
        "--zero-price-demand",
        help="orders: count zero-price lines as demand (default: stored as free, not demand)",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON for scripts"),
) -> None:
    """Validate and load one file in one transaction; a repeat of a loaded file is skipped."""
    if entity != "m5" and entity not in ENTITIES:
        err_console.print(f"unknown entity {entity!r}: choose {', '.join(ENTITIES)} or m5")
        raise typer.Exit(EXIT_INVALID)
    mapping = _mapping(map_ or [])
    options = SourceOptions(tuple(ignore or ()), discount.value, zero_price_demand)
    if entity == "m5" and (mapping or rejects is not None or max_reject is not None):
        err_console.print("--map, --rejects and --max-reject do not apply to m5")
        raise typer.Exit(EXIT_INVALID)
    if entity == "m5" and options != SourceOptions():
        err_console.print("--ignore, --discount and --zero-price-demand are not for m5")
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
                reports = list(
                    import_m5(engine, file, progress=advance, on_phase=step, force=force).values()
                )
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
                        force=force,
                        options=options,
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
