"""`salesfc accuracy` (score stored runs, then the drift check) and `salesfc events`."""

from __future__ import annotations

import datetime as dt
import json

import typer
from rich.console import Console
from rich.table import Table

from app.cli.progress import Phases
from app.services.accuracy import score_snapshots
from app.services.drift import check_drift
from featurestore import drift_events
from featurestore.config import get_settings
from featurestore.db import get_engine
from training.registry import Registry

console = Console(stderr=True)
out = Console()


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO date", param_hint=option) from exc


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def accuracy(
    since: str | None = typer.Option(
        None, "--since", help="Score the runs made from this day on (default: every run)"
    ),
    drift: bool = typer.Option(
        True, "--drift/--no-drift", help="Then check for drift (retrain, fallback)"
    ),
) -> None:
    """Score every stored forecast run whose days now have actuals (again after late orders)."""
    settings = get_settings()
    engine = get_engine()
    start = _date(since, "--since")
    detail_days = max(settings.drift_window_days, settings.fallback_days) if drift else 0
    with Phases("accuracy", console) as phases:
        phases.start("scoring forecast runs")

        def progress(done: int, total: int) -> None:
            if done == 1:
                phases.start(f"scoring {total:,} forecast run(s)", total=total)
            phases.advance()

        summary = score_snapshots(engine, since=start, progress=progress, detail_days=detail_days)
        decision = None
        if drift and summary.runs:
            phases.start("checking for drift")
            decision = check_drift(engine, settings, Registry(settings.models_dir), summary.detail)
    console.print(
        f"{summary.runs:,} run(s) scored ({summary.rows:,} SKU-days, actuals up to "
        f"{summary.last_day}), {summary.skipped:,} without actuals yet, "
        f"in {summary.seconds:.1f} s",
        highlight=False,
    )
    if summary.overall:
        table = Table(
            "model version",
            "runs",
            "SKU-days",
            "WAPE",
            "naive WAPE",
            "RMSSE",
            "naive RMSSE",
            "bias",
            "P10-P90 coverage",
        )
        for g in summary.overall:
            table.add_row(
                g["model_version"],
                f"{g['runs']:,}",
                f"{g['rows']:,}",
                _pct(g["wape"]),
                _pct(g["naive_wape"]),
                "-" if g["rmsse"] is None else f"{g['rmsse']:.3f}",
                "-" if g["naive_rmsse"] is None else f"{g['naive_rmsse']:.3f}",
                "-" if g["bias"] is None else f"{g['bias']:+.1%}",
                _pct(g["coverage"]),
            )
        out.print(table)
    if decision is not None:
        for event in decision.events:
            console.print(
                f"drift: {event.kind}: {event.detail.get('reason', '')}"
                + (f" (job {event.job_id})" if event.job_id else ""),
                highlight=False,
                soft_wrap=True,
            )


def events(
    since: str | None = typer.Option(None, "--since", help="Events from this day on"),
    kind: str | None = typer.Option(None, "--kind", help="Only events of this kind"),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="At most this many"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """Drift decisions, newest first: checks, retrains started or skipped, fallback on and off."""
    start = _date(since, "--since")
    when = None if start is None else dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    found = drift_events.list_events(get_engine(), since=when, kind=kind, limit=limit)
    if as_json:
        for e in found:
            out.print_json(
                json.dumps(
                    {
                        "id": e.id,
                        "at": e.at.isoformat(),
                        "kind": e.kind,
                        "model_version": e.model_version,
                        "job_id": e.job_id,
                        "detail": e.detail,
                    }
                )
            )
        return
    table = Table("id", "at (UTC)", "kind", "model version", "job", "why")
    for e in found:
        table.add_row(
            str(e.id),
            e.at.strftime("%Y-%m-%d %H:%M"),
            e.kind,
            e.model_version or "",
            e.job_id or "",
            str(e.detail.get("reason", "")),
        )
    out.print(table)
    if not found:
        console.print("no drift events yet (salesfc accuracy records them)")
