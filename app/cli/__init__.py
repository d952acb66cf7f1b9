"""The one `salesfc` command: a thin typer face over the featurestore and training services."""

from __future__ import annotations

import os
import sys

# Set before anything imports LightGBM (the training modules below do): OpenMP's default active
# wait keeps idle threads spinning, which slows fits on a busy machine (docs/benchmarks.md).
# An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import typer

from app.cli import accuracy, data, db, ingest, inventory, models, nightly, service, training
from app.cli.errors import SalesfcGroup
from app.cli.progress import quiet_library_warnings

cli = typer.Typer(
    name="salesfc",
    help="Per-SKU sales forecasting: feature store, training, forecasts and the service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click errors: "Error: ..." on one line, not a panel that wraps a long message.
    rich_markup_mode=None,
    cls=SalesfcGroup,
)


@cli.callback()
def root(
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="SALESFC_DEBUG",
        help="Show the traceback of an error instead of its one-line summary",
    ),
) -> None:
    """Per-SKU sales forecasting: feature store, training, forecasts and the service."""
    quiet_library_warnings(debug)


cli.add_typer(db.cli, name="db")
cli.add_typer(models.cli, name="models")
cli.command(cls=ingest.IngestCommand)(ingest.ingest)
cli.command("demo-data")(data.demo_data)
cli.command("train")(training.train)
cli.command("backtest")(training.backtest)
cli.command("tune")(training.tune)
cli.command("forecast-all")(training.forecast_all_command)
cli.command("report")(training.report)
cli.command("inventory-plan")(inventory.inventory_plan)
cli.command("serve")(service.serve)
cli.command("nightly")(nightly.nightly)
cli.command("accuracy")(accuracy.accuracy)
cli.command("events")(accuracy.events)
cli.command("worker", hidden=True)(service.worker)


def main() -> None:
    """Entry point of the `salesfc` console script."""
    args = sys.argv[1:]
    if "--debug" in args[1:]:
        # `salesfc train --debug` means the same as `salesfc --debug train`: move it in front.
        args = ["--debug", *[a for a in args if a != "--debug"]]
    cli(args=args)
