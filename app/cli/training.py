"""`salesfc train | backtest | forecast-all | report`: the training services on the command line."""

from __future__ import annotations

import datetime as dt
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from app.cli.progress import Phases, TrainingSteps
from app.services.aggregate import forecast_totals
from app.services.batch import run_forecast_all
from featurestore.config import get_settings
from featurestore.db import get_engine
from featurestore.readers import last_sales_date, read_products
from training.aggregate import LEVELS
from training.backtest import SELECTION_METRICS, BacktestResult, inventory_report
from training.engine import ENGINES
from training.engine.runner import LocalRunner
from training.engine.select import batch_forecaster, history_runner
from training.errors import TrainingError
from training.estimators import model_names
from training.options import InvalidOptions, TrainOptions, train_options
from training.pipeline import ALL_MODELS, TrainOutcome, backtest_on, load_history
from training.pipeline import train as run_train
from training.predict import quantile_column, write_forecasts
from training.promotion import gate
from training.registry import Registry
from training.report import write_report
from training.tune import tune as run_tune
from training.tune import tuned_options

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


# The metrics a backtest ranks by (training.backtest._score): all lower-is-better.
METRICS = SELECTION_METRICS
OUT_SUFFIXES = (".csv", ".parquet")
PROMOTE = ("if-better", "always", "never")
STDOUT = "-"
MODEL_WIDTH = 24


def _check_models(value: str) -> str:
    known = model_names()
    unknown = [m.strip() for m in value.split(",") if m.strip() and m.strip() not in known]
    if unknown:
        raise typer.BadParameter(
            f"unknown model(s) {', '.join(unknown)}; choose among {', '.join(known)}"
        )
    return value


def _check_metric(value: str) -> str:
    if value not in METRICS:
        raise typer.BadParameter(f"{value!r} is not a backtest metric; choose {', '.join(METRICS)}")
    return value


def _check_promote(value: str) -> str:
    if value not in PROMOTE:
        raise typer.BadParameter(f"{value!r}: choose {', '.join(PROMOTE)}")
    return value


def _check_quantiles(value: str) -> str:
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            level = float(item)
        except ValueError:
            raise typer.BadParameter(f"{item.strip()!r} is not a number") from None
        if not 0.0 < level < 1.0:
            raise typer.BadParameter(f"{item.strip()} is not a level strictly between 0 and 1")
    if not value.strip(" ,"):
        raise typer.BadParameter("give at least one level, e.g. 0.1,0.5,0.9")
    return value


def _check_out(value: Path | None) -> Path | None:
    if value is not None and value.suffix not in OUT_SUFFIXES:
        raise typer.BadParameter(f"{value.name}: the file must end in .csv or .parquet")
    if value is not None and value.is_dir():
        raise typer.BadParameter(f"{value} is a directory; give a file name")
    return value


def _check_levels(value: str | None) -> str | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in names if v not in LEVELS]
    if unknown or not names:
        raise typer.BadParameter(
            f"{', '.join(unknown) or repr(value)}: choose among {', '.join(LEVELS)}"
        )
    return value


def _totals_path(out: Path) -> Path:
    """Where the totals go beside the SKU file: forecasts.parquet -> forecasts_totals.parquet."""
    return out.with_name(f"{out.stem}_totals{out.suffix}")


def _totals_table(totals: pd.DataFrame, names: list[str]) -> Table:
    """Each total over the horizon (mean) and its first day with the outer quantiles."""
    table = Table(box=box.SIMPLE_HEAD, title="totals", title_justify="left", pad_edge=False)
    lo, hi = names[0], names[-1]
    for col in ("level", "key", "SKUs", "horizon mean", f"day 1 mean [{lo}, {hi}]"):
        table.add_column(col, justify="left" if col in {"level", "key"} else "right")
    for (level, key), group in totals.groupby(["level", "key"], sort=False):
        first = group.iloc[0]
        table.add_row(
            str(level),
            str(key),
            str(int(first["skus"])),
            f"{group['mean'].sum():,.1f}",
            f"{first['mean']:,.1f} [{first[lo]:,.0f}, {first[hi]:,.0f}]",
        )
    return table


def _check_as_of(value: str | None) -> str | None:
    _parse_date(value)
    return value


def _comparison(result: BacktestResult, title: str) -> Table:
    """The models' overall metrics, best first, in a table that wraps rather than cuts."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    frame = result.table().rename(columns={"fit_seconds": "fit s"})
    # The model's name is what the reader looks for: as wide as the longest, within reason.
    longest = max((len(str(m)) for m in frame["model"]), default=5)
    for col in frame.columns:
        if col == "model":
            table.add_column(col, overflow="fold", min_width=min(longest, MODEL_WIDTH))
        else:
            table.add_column(col, justify="right", overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(
            *[_cell(v, 1 if k == "fit s" else 4) for k, v in zip(frame.columns, row, strict=True)]
        )
    return table


def _cell(value: object, digits: int) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:.{digits}f}"  # NaN: the metric is undefined
    return "-" if value is None else str(value)


def _fits(options: TrainOptions) -> int:
    """How many fits the backtest makes: every candidate on every fold."""
    return options.folds * len(dict.fromkeys(options.models))


def _options(**choices: object) -> TrainOptions:
    try:
        return train_options(choices)
    except InvalidOptions as exc:
        raise typer.BadParameter(str(exc)) from exc


CUTOFF = typer.Option(None, "--cutoff", help="Train on data up to this date only (YYYY-MM-DD)")
MODELS = typer.Option(
    ",".join(DEFAULTS.models), "--models", help=MODELS_HELP, callback=_check_models
)
STRATEGY = typer.Option(
    DEFAULTS.strategy, "--strategy", help="direct, recursive or multi (M5-style)"
)
HORIZON = typer.Option(DEFAULTS.horizon, "--horizon", min=1, help="Days ahead")
FOLDS = typer.Option(DEFAULTS.folds, "--folds", min=1, help="Rolling-origin folds")
STEP = typer.Option(None, "--step", min=1, help="Days between fold cut-offs (default: horizon)")
METRIC = typer.Option(
    DEFAULTS.metric,
    "--metric",
    help=f"Selection metric: {', '.join(METRICS)}",
    callback=_check_metric,
)
ENSEMBLE = typer.Option(
    DEFAULTS.ensemble_top, "--ensemble-top", min=0, help="Also try the mean of the best N models"
)
TREES = typer.Option(None, "--n-estimators", min=1, help="Trees for the LightGBM models")
FLOORS = typer.Option(
    None,
    "--lag-floors",
    help="multi only: the stages' lag floors, e.g. 1,14,28 (day 1 reads yesterday's units; "
    "default 14,28)",
)
PROMOTE_OPTION = typer.Option(
    "if-better",
    "--promote",
    help="if-better (gate on the metric), always or never",
    callback=_check_promote,
)


def _promotion(registry: Registry, outcome: TrainOutcome, promote: str, never: bool) -> str:
    """The --promote decision on a trained bundle, in words (the gate's, or why it was skipped)."""
    if never or outcome.comparison is None:
        return f"champion stays {registry.champion()} (--promote never)"
    return str(gate(registry, outcome.version, outcome.comparison, promote == "always")["decision"])


def _check_engine(value: str) -> str:
    if value not in ENGINES:
        raise typer.BadParameter(f"{value!r}: choose {' or '.join(ENGINES)}")
    return value


ENGINE_HELP = "local (this process) or dask (SKU partitions on a Dask cluster: see --scheduler)"
ENGINE = typer.Option(
    "local", "--engine", envvar="SALESFC_ENGINE", help=ENGINE_HELP, callback=_check_engine
)
SCHEDULER = typer.Option(
    None,
    "--scheduler",
    help="With --engine dask: the scheduler's address (tcp://host:8786), or local for a "
    "LocalCluster on this machine (default: SALESFC_DASK_SCHEDULER)",
)


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
    lag_floors: str | None = FLOORS,
    promote: str = PROMOTE_OPTION,
    if_no_champion: bool = typer.Option(
        False, "--if-no-champion", help="Do nothing when a champion bundle already exists"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the bundle, verdict and comparison as JSON on stdout"
    ),
    engine: str = ENGINE,
    scheduler: str | None = SCHEDULER,
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
        lag_floors=lag_floors,
    )
    registry = Registry(settings.models_dir)
    never = promote == "never" and registry.champion() is not None
    store = get_engine()
    with Phases("train", console) as phases:
        phases.start("reading history" + (" on the Dask workers" if engine == "dask" else ""))
        with history_runner(
            engine, scheduler, store, settings.database_url, options.cutoff
        ) as runner:
            steps = TrainingSteps(phases, _fits(options))
            outcome = run_train(
                store,
                settings.models_dir,
                options,
                progress=steps,
                compare_with=None if never else registry,
                runner=runner,
            )
    state = _promotion(registry, outcome, promote, never)
    console.print(_comparison(outcome.backtest, f"backtest by {metric}"))
    console.print(training_data_line(outcome.metrics.get("training_data") or {}))
    console.print(
        f"bundle [bold]{outcome.version}[/bold] ({outcome.champion_model}, "
        f"{metric} {outcome.score:.4f}): {state}"
    )
    if as_json:
        doc = {
            "version": outcome.version,
            "model": outcome.champion_model,
            "metric": metric,
            "score": outcome.score,
            "state": state,
            "comparison": outcome.backtest.table().to_dict(orient="records"),
            "training_data": outcome.metrics.get("training_data"),
        }
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    typer.echo(outcome.version)


def tune(
    trials: int = typer.Option(20, "--trials", min=1, help="Parameter draws to backtest at most"),
    max_minutes: float = typer.Option(
        30.0, "--max-minutes", min=0.1, help="Stop before a trial would end past this budget"
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the search"),
    cutoff: str | None = CUTOFF,
    models: str = MODELS,
    strategy: str = STRATEGY,
    horizon: int = HORIZON,
    folds: int = FOLDS,
    step: int | None = STEP,
    metric: str = METRIC,
    n_estimators: int | None = TREES,
    lag_floors: str | None = FLOORS,
    promote: str = PROMOTE_OPTION,
    engine: str = ENGINE,
    scheduler: str | None = SCHEDULER,
) -> None:
    """Random search of LightGBM parameters on the rolling-origin backtest, then train with the
    best; the parameters and the trials go into the bundle manifest."""
    settings = get_settings()
    options = _options(
        cutoff=cutoff,
        models=models,
        strategy=strategy,
        horizon=horizon,
        folds=folds,
        step=step,
        metric=metric,
        n_estimators=n_estimators,
        lag_floors=lag_floors,
    )
    registry = Registry(settings.models_dir)
    never = promote == "never" and registry.champion() is not None
    store = get_engine()
    with Phases("tune", console) as phases:
        phases.start("reading history" + (" on the Dask workers" if engine == "dask" else ""))
        with history_runner(
            engine, scheduler, store, settings.database_url, options.cutoff
        ) as runner:
            if runner is None:
                runner = LocalRunner(*load_history(store, options.cutoff))
            phases.start(f"search ({trials} trials at most, {max_minutes:g} min)", total=trials)

            def trial_done(message: str) -> None:
                phases.advance()
                phases.describe(message)
                console.print(message)

            try:
                found = run_tune(
                    runner,
                    options,
                    trials=trials,
                    max_minutes=max_minutes,
                    seed=seed,
                    progress=trial_done,
                )
            except TrainingError as exc:
                raise typer.BadParameter(str(exc)) from exc
            best = found.best
            phases.start("training with the best parameters")
            steps = TrainingSteps(phases, _fits(options))
            outcome = run_train(
                store,
                settings.models_dir,
                tuned_options(options, found),
                progress=steps,
                compare_with=None if never else registry,
                tuning=found.to_dict(),
                runner=runner,
            )
    state = _promotion(registry, outcome, promote, never)
    console.print(
        f"best of {len(found.trials)} trials: {metric} {best['score']:.4f} "
        f"(defaults {found.trials[0]['score']:.4f}) with {best['params'] or 'the defaults'}"
    )
    console.print(f"bundle [bold]{outcome.version}[/bold] ({outcome.champion_model}): {state}")
    typer.echo(outcome.version)


def backtest(
    json_path: str | None = typer.Option(
        None, "--json", help="Write the full report as JSON to this file, or - for stdout"
    ),
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
    lag_floors: str | None = FLOORS,
    engine: str = ENGINE,
    scheduler: str | None = SCHEDULER,
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
        lag_floors=lag_floors,
    )
    store = get_engine()
    with Phases("backtest", console) as phases:
        phases.start("reading history" + (" on the Dask workers" if engine == "dask" else ""))
        with history_runner(
            engine, scheduler, store, get_settings().database_url, options.cutoff
        ) as runner:
            if runner is None:
                runner = LocalRunner(*load_history(store, options.cutoff))
            steps = TrainingSteps(phases, _fits(options))
            result = backtest_on(runner, options, steps)
            steps.finish()
    title = f"backtest: {len(result.cutoffs)} folds x {horizon} days, by {metric}"
    console.print(_comparison(result, title))
    if json_path is not None:
        document = result.to_json()
        # The (R, S) policy replayed on the best model's folds (docs/operations.md, Inventory).
        document["inventory"] = inventory_report(result)
        text = json.dumps(document, indent=2, default=str)
    if json_path == STDOUT:
        typer.echo(text)
    elif json_path is not None:
        Path(json_path).write_text(text)
        console.print(f"report written to {json_path}")


def forecast_all_command(
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Origin date, up to the last sales day (default: the last sales day)",
        callback=_check_as_of,
    ),
    horizon: int | None = typer.Option(None, "--horizon", min=1, help="Days ahead"),
    out: Path | None = typer.Option(
        None, "--out", help="Also write a .parquet or .csv file", callback=_check_out
    ),
    quantiles: str = typer.Option(
        "0.1,0.5,0.9",
        "--quantiles",
        help="Comma-separated levels strictly between 0 and 1",
        callback=_check_quantiles,
    ),
    store: bool = typer.Option(
        True, "--store/--no-store", help="Store the run for GET /v1/forecasts and the cache"
    ),
    totals_at: str | None = typer.Option(
        None,
        "--levels",
        help=f"Also the totals at these levels ({', '.join(LEVELS)}): coherent means, quantiles "
        "from joint sample paths; written beside --out as <name>_totals, else printed",
        callback=_check_levels,
    ),
    engine_name: str = ENGINE,
    scheduler: str | None = SCHEDULER,
) -> None:
    """Forecast every active SKU from the champion: sku, date, mean and quantiles per day."""
    settings = get_settings()
    levels = [float(q) for q in quantiles.split(",") if q.strip()]
    engine = get_engine()
    origin = _origin(engine, _parse_date(as_of))
    with Phases("forecast-all", console) as phases:
        phases.start("forecasting the catalogue")
        with batch_forecaster(engine_name, scheduler, settings.database_url) as forecast:
            result = run_forecast_all(
                engine,
                Registry(settings.models_dir),
                as_of=origin,
                horizon=horizon,
                quantiles=levels,
                store=store,
                forecast=forecast,
            )
        frame = result.frame
        if out is not None:
            phases.start(f"writing {len(frame):,} rows to {out.name}")
            write_forecasts(frame, out)
        totals = None
        if totals_at is not None:
            phases.start(f"totals at {totals_at}")
            totals = forecast_totals(
                frame,
                read_products(engine),
                Registry(settings.models_dir),
                result.model_version,
                levels=[v.strip() for v in totals_at.split(",") if v.strip()],
                quantiles=sorted(levels),
            )
            if out is not None:
                write_forecasts(totals, _totals_path(out))
    where = [str(out)] if out is not None else []
    if result.run_id:
        where.append(f"run {result.run_id}")
    console.print(
        f"{frame['sku'].nunique():,} SKUs x {frame['date'].nunique()} days from "
        f"{result.model_version} (as of {result.as_of}): {', '.join(where) or 'not stored'}"
    )
    if totals is not None:
        if out is not None:
            console.print(
                f"{totals[['level', 'key']].drop_duplicates().shape[0]:,} totals: "
                f"{_totals_path(out)}"
            )
        else:
            console.print(_totals_table(totals, [quantile_column(q) for q in sorted(levels)]))


# A last sales day older than this (against today) is reported: forecasts start from it.
STALE_DAYS = 3


def _today() -> dt.date:
    return datetime.now(ZoneInfo(get_settings().timezone)).date()


def _origin(engine: Engine, as_of: dt.date | None) -> dt.date | None:
    """The forecast origin, refused after the last sales day and reported when stale."""
    last = last_sales_date(engine)
    if last is None:
        raise TrainingError("the feature store has no sales history: ingest data first")
    if as_of is not None and as_of > last:
        raise typer.BadParameter(
            f"{as_of} is {(as_of - last).days} day(s) after the last sales day {last}: the days "
            "between have no data; ingest newer sales or leave --as-of out",
            param_hint="--as-of",
        )
    stale = (_today() - last).days
    if as_of is None and stale > STALE_DAYS:
        console.print(
            f"[yellow]warning:[/yellow] the last sales day is {last}, {stale} days ago: "
            "forecasts start from it; ingest newer sales for fresher forecasts",
            highlight=False,
            soft_wrap=True,
        )
    return as_of


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
    with Phases("report", console) as phases:
        phases.start("loading the bundle")
        bundle = registry.load(version) if version else registry.load_champion()
        phases.start(f"reporting on {bundle.version}")
        path = write_report(bundle, out, skus=skus)
    console.print(f"report on {bundle.version} written to {path}")


def training_data_line(data: dict[str, Any]) -> str:
    """The cleaning of the champion's training targets, in one line."""
    if not data.get("rows"):
        return "training data: not cleaned"
    yearly = "kept" if data.get("yearly_features") else "dropped (under two years of history)"
    return (
        f"training data: {data.get('censored_days', 0):,} days censored "
        f"({data.get('stock_out_days', 0):,} flagged out of stock, "
        f"{data.get('zero_run_days', 0):,} in improbable zero runs, "
        f"{data.get('closed_days', 0):,} closed), "
        f"{data.get('capped_days', 0):,} bulk-order days capped; yearly features {yearly}"
    )
