"""`salesfc db ...`: migrations and store statistics."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from featurestore import migrations
from featurestore.calendar import sync_holidays
from featurestore.config import get_settings
from featurestore.db import get_engine
from featurestore.stats import store_stats

cli = typer.Typer(help="Feature store database: migrations and statistics.", no_args_is_help=True)
console = Console()


@cli.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision")) -> None:
    """Migrate the feature store up (creates it on first run)."""
    migrations.upgrade(get_settings().database_url, revision)
    console.print(f"database migrated to [bold]{revision}[/bold]")


@cli.command()
def downgrade(
    revision: str = typer.Argument("-1", help="Target revision ('base' drops every table)"),
) -> None:
    """Migrate the feature store down."""
    migrations.downgrade(get_settings().database_url, revision)
    console.print(f"database migrated down to [bold]{revision}[/bold]")


@cli.command("sync-holidays")
def sync_holidays_command() -> None:
    """Add public holidays (holidays package) for every region in the catalogue."""
    written = sync_holidays(get_engine())
    console.print(f"{written:,} holiday rows added")


@cli.command()
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts")) -> None:
    """Row counts per table, SKUs, the sales date range and total units."""
    result = store_stats(get_engine())
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    table = Table(title="feature store")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, count in result["tables"].items():
        table.add_row(f"rows in {name}", f"{count:,}")
    for key in ("skus", "first_sales_date", "last_sales_date", "total_units"):
        table.add_row(key, str(result[key]))
    console.print(table)
