"""`salesfc models ...`: list, show, promote and roll back model bundles."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from featurestore.config import get_settings
from training.bundle import Manifest
from training.registry import Registry

cli = typer.Typer(help="Model bundles and the champion alias.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)
VERSION_WIDTH = len("* 20260102T000000Z-bbbb")
MODEL_WIDTH = 24


def _registry() -> Registry:
    return Registry(get_settings().models_dir)


def metrics_summary(metrics: dict[str, Any], first: str | None = None, limit: int = 4) -> str:
    """The top-level numeric metrics as `name=value`, the selection metric first."""
    numeric = {
        k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    names = sorted(numeric, key=lambda k: (k != first, k))[:limit]
    return " ".join(f"{k}={numeric[k]:.4g}" for k in names) or "-"


def model_type(manifest: Manifest) -> str:
    """What a bundle's model is (family/strategy), from its backtest or its parameters."""
    chosen = manifest.metrics.get("champion_model") or manifest.params.get("model")
    return str(chosen) if chosen else "-"


@cli.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts")) -> None:
    """Every bundle, newest first, with the champion marked."""
    registry = _registry()
    manifests, broken = registry.scan()
    champion = registry.champion()
    if as_json:
        rows = [{**m.to_dict(), "champion": m.version == champion} for m in manifests]
        typer.echo(json.dumps(rows, indent=2))
    else:
        selection = get_settings().selection_metric
        table = Table(title=f"models in {registry.models_dir}", box=box.SIMPLE_HEAD, pad_edge=False)
        # Versions are ids to copy: never cut; the rest folds onto more lines when narrow.
        # The version id starts with its creation time (UTC): no separate column for it.
        table.add_column("version (* champion)", no_wrap=True, min_width=VERSION_WIDTH)
        models = [model_type(m) for m in manifests]
        widest = max((len(m) for m in models), default=5)
        table.add_column("model", overflow="fold", min_width=min(widest, MODEL_WIDTH))
        table.add_column("cutoff", overflow="fold")
        table.add_column("skus", justify="right", overflow="fold")
        table.add_column("metrics", overflow="fold")
        for m, model in zip(manifests, models, strict=True):
            table.add_row(
                f"* {m.version}" if m.version == champion else f"  {m.version}",
                model,
                m.cutoff,
                f"{m.sku_count:,}",
                metrics_summary(m.metrics, selection),
            )
        console.print(table)
        if champion is None:
            console.print("no champion yet: promote one with `salesfc models promote VERSION`")
    for name, reason in sorted(broken.items()):
        err_console.print(f"[yellow]broken bundle {name}:[/yellow] {reason}", highlight=False)


@cli.command()
def show(
    version: str = typer.Argument(..., help="A version id, or 'champion'"),
) -> None:
    """Print one bundle's manifest as JSON."""
    registry = _registry()
    if version == "champion":
        champion = registry.champion()
        if champion is None:
            raise typer.BadParameter("no champion has been promoted yet", param_hint="VERSION")
        version = champion
    manifest: Manifest = registry.get(version)
    typer.echo(manifest.to_json(), nl=False)


@cli.command()
def promote(
    version: str = typer.Argument(..., help="The version to make champion"),
    reason: str = typer.Option("", "--reason", "-r", help="Why, kept in the alias history"),
) -> None:
    """Make VERSION the champion after verifying that its bundle loads."""
    registry = _registry()
    previous = registry.champion()
    registry.promote(version, reason=reason)
    if previous == version:
        console.print(f"{version} is already the champion")
    else:
        console.print(f"champion: {previous or '(none)'} -> [bold]{version}[/bold]")


@cli.command()
def rollback(
    reason: str = typer.Option("", "--reason", "-r", help="Why, kept in the alias history"),
) -> None:
    """Return to the previous champion."""
    registry = _registry()
    previous = registry.champion()
    target = registry.rollback(reason=reason)
    console.print(f"champion: {previous} -> [bold]{target}[/bold] (rolled back)")


@cli.command()
def history(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts")) -> None:
    """Champion changes, newest first."""
    events = _registry().history()
    if as_json:
        typer.echo(json.dumps(events, indent=2))
        return
    table = Table(title="champion history", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("at UTC", overflow="fold")
    table.add_column("action", min_width=8)
    table.add_column("version", no_wrap=True, min_width=VERSION_WIDTH - 2)
    table.add_column("previous", overflow="fold")
    table.add_column("reason", overflow="fold")
    for e in events:
        table.add_row(
            e["at"][:19].replace("T", " "),
            e["action"],
            e["version"],
            e["previous"] or "-",
            e["reason"] or "",
        )
    console.print(table)
