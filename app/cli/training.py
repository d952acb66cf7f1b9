"""`salesfc train | backtest | forecast-all | report`: the training services on the command line."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.services.batch import run_forecast_all
from featurestore.config import get_settings
from featurestore.db import get_engine
from training.backtest import inventory_report
from training.bundle import BundleError
from training.options import InvalidOptions, TrainOptions, train_options
from training.pipeline import ALL_MODELS, load_history
from training.pipeline import backtest as run_backtest
from training.pipeline import train as run_train
from training.predict import write_forecasts
from training.promotion import gate
from training.registry import Registry, RegistryError
from training.report import ReportError, write_report

console = Console(stderr=True)
MODELS_HELP = f"Comma-separated candidates among: {', '.join(ALL_MODELS)}"
# The options' defaults, shown by --help; training.options is where they are written.
DEFAULTS = TrainOptions()


def _parse_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO date (YYYY-MM-DD)") from exc


@contextmanager
def _progress(title: str) -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield progress


def _options(**choices: object) -> TrainOptions:
    try:
        return train_options(choices)
    except InvalidOptions as exc:
        raise typer.BadParameter(str(exc)) from exc


CUTOFF = typer.Option(None, "--cutoff", help="Train on data up to this date only (YYYY-MM-DD)")
MODELS = typer.Option(",".join(DEFAULTS.models), "--models", help=MODELS_HELP)
STRATEGY = typer.Option(
    DEFAULTS.strategy, "--strategy", help="direct, recursive or multi (M5-style)"
)
HORIZON = typer.Option(DEFAULTS.horizon, "--horizon", min=1, help="Days ahead")
FOLDS = typer.Option(DEFAULTS.folds, "--folds", min=1, help="Rolling-origin folds")
STEP = typer.Option(None, "--step", min=1, help="Days between fold cut-offs (default: horizon)")
METRIC = typer.Option(
    DEFAULTS.metric, "--metric", help="Selection metric: rmsse, wape, mase, rmse, mae"
)
ENSEMBLE = typer.Option(
    DEFAULTS.ensemble_top, "--ensemble-top", min=0, help="Also try the mean of the best N models"
)
TREES = typer.Option(None, "--n-estimators", min=1, help="Trees for the LightGBM models")


def train(
    cutoff: str | None = CUTOFF,
    models: str = MODELS,
    strategy: str = STRATEGY,
    horizon: int = HORIZON,
    folds: int = FOLDS,
    step: int | None = STEP,
    metric: str = METRIC,
    ensemble_top: int = ENSEMBLE,
    n_estimators: int | None = TREES,
    promote: str = typer.Option(
        "if-better", "--promote", help="if-better (gate on the metric), always or never"
    ),
    if_no_champion: bool = typer.Option(
        False, "--if-no-champion", help="Do nothing when a champion bundle already exists"
    ),
) -> None:
    """Backtest the candidates, refit the best on all data up to the cut-off, write a bundle."""
    settings = get_settings()
    if if_no_champion:
        champion = Registry(settings.models_dir).champion()
        if champion is not None:
            console.print(f"champion {champion} exists: not training")
            return
    options = _options(
        cutoff=cutoff,
        models=models,
        strategy=strategy,
        horizon=horizon,
        folds=folds,
        step=step,
        metric=metric,
        ensemble_top=ensemble_top,
        n_estimators=n_estimators,
    )
    with _progress("train") as progress:
        task = progress.add_task("reading history", total=None)
        outcome = run_train(
            get_engine(),
            settings.models_dir,
            options,
            progress=lambda msg: progress.update(task, description=msg),
        )
        progress.update(task, description="done")
    if promote not in ("if-better", "always", "never"):
        raise typer.BadParameter("--promote must be if-better, always or never")
    registry = Registry(settings.models_dir)
    if promote == "never" and registry.champion() is not None:
        state = f"champion stays {registry.champion()} (--promote never)"
    else:
        verdict = gate(registry, outcome.version, outcome.score, metric, promote == "always")
        state = (
            "promoted to champion"
            if verdict["promoted"]
            else f"champion stays {verdict['champion_before']} ({metric} "
            f"{verdict['champion_score']:.4f} is not beaten)"
        )
    table = outcome.backtest.table()
    console.print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    console.print(
        f"bundle [bold]{outcome.version}[/bold] ({outcome.champion_model}, "
        f"{metric} {outcome.score:.4f}): {state}"
    )
    typer.echo(outcome.version)


def backtest(
    json_path: Path | None = typer.Option(None, "--json", help="Write the full report here"),
    cutoff: str | None = CUTOFF,
    models: str = MODELS,
    strategy: str = STRATEGY,
    horizon: int = HORIZON,
    # More folds than train's default: a backtest alone is run to compare, not to ship.
    folds: int = typer.Option(3, "--folds", min=1, help="Rolling-origin folds"),
    step: int | None = STEP,
    metric: str = METRIC,
    ensemble_top: int = ENSEMBLE,
    n_estimators: int | None = TREES,
) -> None:
    """Rolling-origin evaluation of the candidates: metrics overall, by segment and by horizon."""
    options = _options(
        cutoff=cutoff,
        models=models,
        strategy=strategy,
        horizon=horizon,
        folds=folds,
        step=step,
        metric=metric,
        ensemble_top=ensemble_top,
        n_estimators=n_estimators,
    )
    with _progress("backtest") as progress:
        task = progress.add_task("reading history", total=None)
        history, products = load_history(get_engine(), options.cutoff)
        result = run_backtest(
            history, products, options, lambda msg: progress.update(task, description=msg)
        )
        progress.update(task, description="done")
    table = Table(title=f"backtest: {len(result.cutoffs)} folds x {horizon} days, by {metric}")
    frame = result.table()
    for col in frame.columns:
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    if json_path is not None:
        document = result.to_json()
        # The (R, S) policy replayed on the best model's folds (docs/operations.md, Inventory).
        document["inventory"] = inventory_report(result)
        json_path.write_text(json.dumps(document, indent=2, default=str))
        console.print(f"report written to {json_path}")


def forecast_all_command(
    as_of: str | None = typer.Option(None, "--as-of", help="Origin date (default: last sales day)"),
    horizon: int | None = typer.Option(None, "--horizon", min=1, help="Days ahead"),
    out: Path | None = typer.Option(None, "--out", help="Also write a .parquet or .csv file"),
    quantiles: str = typer.Option("0.1,0.5,0.9", "--quantiles", help="Comma-separated levels"),
    store: bool = typer.Option(
        True, "--store/--no-store", help="Store the run for GET /v1/forecasts and the cache"
    ),
) -> None:
    """Forecast every active SKU from the champion: sku, date, mean and quantiles per day."""
    settings = get_settings()
    levels = [float(q) for q in quantiles.split(",") if q.strip()]
    with _progress("forecast-all") as progress:
        progress.add_task("forecasting the catalogue", total=None)
        result = run_forecast_all(
            get_engine(),
            Registry(settings.models_dir),
            as_of=_parse_date(as_of),
            horizon=horizon,
            quantiles=levels,
            store=store,
        )
    frame = result.frame
    if out is not None:
        write_forecasts(frame, out)
    where = [str(out)] if out is not None else []
    if result.run_id:
        where.append(f"run {result.run_id}")
    console.print(
        f"{frame['sku'].nunique():,} SKUs x {frame['date'].nunique()} days from "
        f"{result.model_version} (as of {result.as_of}): {', '.join(where) or 'not stored'}"
    )


def report(
    out: Path = typer.Option(..., "--out", help="The HTML file to write"),
    version: str | None = typer.Option(
        None, "--version", help="Bundle version to report on (default: the champion)"
    ),
    skus: list[str] | None = typer.Option(
        None, "--sku", help="SKU to plot instead of the top-volume ones (repeatable)"
    ),
) -> None:
    """Write one self-contained HTML report of a bundle: metrics, comparison table and plots."""
    registry = Registry(get_settings().models_dir)
    try:
        bundle = registry.load(version) if version else registry.load_champion()
        with _progress("report") as progress:
            progress.add_task(f"reporting on {bundle.version}", total=None)
            path = write_report(bundle, out, skus=skus)
    except (RegistryError, BundleError, ReportError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(f"report on {bundle.version} written to {path}")
