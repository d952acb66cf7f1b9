"""The one `salesfc` command: a thin typer face over the featurestore and training services."""

from __future__ import annotations

import os

# Set before anything imports LightGBM (the training modules below do): OpenMP's default active
# wait keeps idle threads spinning, which slows fits on a busy machine (docs/benchmarks.md).
# An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import typer

from app.cli import data, db, ingest, inventory, models, service, training

cli = typer.Typer(
    name="salesfc",
    help="Per-SKU sales forecasting: feature store, training, forecasts and the service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.add_typer(db.cli, name="db")
cli.add_typer(models.cli, name="models")
cli.command()(ingest.ingest)
cli.command("demo-data")(data.demo_data)
cli.command("train")(training.train)
cli.command("backtest")(training.backtest)
cli.command("forecast-all")(training.forecast_all_command)
cli.command("report")(training.report)
cli.command("inventory-plan")(inventory.inventory_plan)
cli.command("serve")(service.serve)
cli.command("worker", hidden=True)(service.worker)


def main() -> None:
    """Entry point of the `salesfc` console script."""
    cli()
