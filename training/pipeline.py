"""Training services used by the CLI and the retrain worker: backtest and train.

``train`` backtests the candidates by rolling origin, picks the champion, calibrates its quantiles
on the backtest residuals, refits it on all the data with the cold-start model and writes one
bundle; whether it becomes the champion is the caller's decision (the promotion gate). Given
the registry, ``train`` also scores its champion as the challenger was scored and records both
scores in the new bundle's manifest (``metrics.promotion``) for the gate.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from featurestore.readers import last_sales_date, read_frame, read_products
from training.backtest import BacktestResult, calibrate, coverage_report
from training.bundle import save_bundle
from training.engine.runner import HistoryRunner, LocalRunner
from training.errors import TrainingError
from training.estimators import family, model_names
from training.forecaster import STRATEGY_NOTE, Forecaster
from training.memory import release_large_blocks
from training.metrics import value_added
from training.options import TrainOptions
from training.predict import ShippedForecast
from training.promotion import Comparison, Scoring, compare
from training.registry import Registry
from training.selection import Selection, choose, sku_fallback

ProgressFn = Callable[[str], None]
ALL_MODELS = model_names()  # for help texts; _candidates asks the registry at call time


@dataclass
class TrainOutcome:
    """A written bundle and the backtest behind it."""

    path: Path
    version: str
    champion_model: str
    score: float
    # Every candidate's reports; its predictions are the champion's and seasonal naive's only.
    backtest: BacktestResult
    metrics: dict[str, Any]
    comparison: Comparison | None = None  # with the champion, when train was given the registry


def check_cutoff(engine: Engine, cutoff: dt.date | None) -> dt.date | None:
    """The last sales day; a cut-off after it is refused."""
    last = last_sales_date(engine)
    if cutoff is not None and last is not None and cutoff > last:
        # The reader fills days without a sales row with zeros: a cut-off past the data would
        # train on weeks of invented zero demand (LightGBM then stops on "sum of labels is zero").
        raise TrainingError(
            f"the cut-off {cutoff} is after the last sales day {last}; "
            f"choose a cut-off up to {last} or leave it out"
        )
    return last


def load_history(
    engine: Engine, cutoff: dt.date | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All SKUs' history up to the cut-off (as known then) and their attributes."""
    last = check_cutoff(engine, cutoff)
    history = read_frame(engine, end=cutoff, as_of=cutoff)
    if history.empty and cutoff is not None and last is not None:
        raise TrainingError(f"no sales history up to the cut-off {cutoff}; choose a later one")
    if history.empty:
        raise TrainingError("the feature store has no sales history: ingest data first")
    products = read_products(engine)
    return history, products


def _candidates(options: TrainOptions) -> list[Forecaster]:
    known = model_names()
    unknown = sorted(set(options.models) - set(known))
    if unknown:
        raise TrainingError(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    out = []
    for name in options.models:
        params = dict(options.model_params.get(name, {}))
        est = family(name)
        if options.n_estimators and est is not None and est.shares_tree_budget:
            params.setdefault("n_estimators", options.n_estimators)
        out.append(
            Forecaster(
                model=name,
                strategy=options.strategy,
                horizon=options.horizon,
                model_params=params,
                floors=options.floors,
            )
        )
    return out


def backtest(
    history: pd.DataFrame,
    products: pd.DataFrame,
    options: TrainOptions,
    progress: ProgressFn | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of the candidate models."""
    return backtest_on(LocalRunner(history, products), options, progress)


def backtest_on(
    runner: HistoryRunner, options: TrainOptions, progress: ProgressFn | None = None
) -> BacktestResult:
    """Rolling-origin backtest of the candidate models on a runner's history (local or Dask)."""
    release_large_blocks()
    return runner.backtest(
        _candidates(options),
        folds=options.folds,
        horizon=options.horizon,
        step=options.step,
        metric=options.metric,
        ensemble_top=options.ensemble_top,
        progress=progress,
    )


def _summary(result: BacktestResult, champion: str) -> dict[str, Any]:
    report = result.reports[champion]
    base = result.reports.get("seasonal_naive")
    return {
        "selection_metric": result.metric,
        "selection_score": result.score(champion),
        "champion_model": champion,
        "overall": report["overall"],
        "by_segment": report["by_segment"],
        "by_horizon": report["by_horizon"],
        "seasonal_naive": base["overall"] if base else None,
        "value_added_over_seasonal_naive": value_added(report["overall"], base["overall"])
        if base
        else None,
        "comparison": result.table().to_dict(orient="records"),
        "cutoffs": [c.date().isoformat() for c in result.cutoffs],
    }


def _shipped(selection: Selection, final: Forecaster, runner: HistoryRunner) -> ShippedForecast:
    """The bundle's description of the served forecast (training.predict.ShippedForecast); the
    fallback segments' SKUs from the runner's demand classes (computed where the history is)."""
    members = tuple(final.name if m == selection.learned else m for m in selection.members)
    fallback = sku_fallback(selection, runner.demand_classes()) if selection.segments else {}
    return ShippedForecast(name=selection.name, members=members, fallback=fallback)


def training_data(model: Forecaster) -> dict[str, Any]:
    """What the fitted model was trained on: censored and capped days, yearly features."""
    return {**getattr(model, "cleaning_", {}), "yearly_features": getattr(model, "yearly_", None)}


def train(
    engine: Engine,
    models_dir: Path,
    options: TrainOptions,
    progress: ProgressFn | None = None,
    compare_with: Registry | None = None,
    tuning: dict[str, Any] | None = None,
    runner: HistoryRunner | None = None,
) -> TrainOutcome:
    """Backtest, pick, calibrate, refit and save a bundle; returns where and what.

    With ``compare_with``, its champion is scored on the same folds for the promotion gate.
    ``runner`` holds the history (default: read whole into this process); the Dask engine's
    keeps it partitioned on a cluster (training.engine.dask_runner).
    """
    release_large_blocks()
    t0 = time.perf_counter()
    if runner is None:
        runner = LocalRunner(*load_history(engine, options.cutoff))
    data_start, last, sku_count = runner.window()
    result = backtest_on(runner, options, progress)
    # Always the backtest's best (baselines, the ensemble and per-segment fallbacks included).
    selection = choose(result)
    champion_name = selection.name
    model_name = (selection.learned or selection.members[0]).split("/")[0]
    comparison = None
    if compare_with is not None:
        # Before the refit: a re-backtest of the champion then never shares memory with it.
        scoring = Scoring(
            metric=result.metric,
            cutoffs=tuple(c.date().isoformat() for c in result.cutoffs),
            horizon=result.horizon,
            data_start=data_start.isoformat(),
            sku_count=sku_count,
        )
        comparison = compare(
            compare_with,
            runner.backtest,
            result,
            champion_name,
            scoring,
            step=options.step,
            progress=progress,
        )
    calibration = calibrate(result, champion_name)
    coverage = coverage_report(result, champion_name)
    # Of the backtest's predictions (every candidate, every fold: 1.5 GB at M5 scale) only the
    # champion's and seasonal naive's are kept (the bundle's "backtest"), before the refit.
    kept = result.predictions["model"].isin([champion_name, "seasonal_naive"]).to_numpy()
    result.predictions = result.predictions[kept].reset_index(drop=True)
    del kept
    if progress:
        progress(f"champion {champion_name}: refitting on all data")
    final = runner.fit(next(c for c in _candidates(options) if c.model == model_name), progress)
    shipped = _shipped(selection, final, runner)
    if progress:
        progress("cold-start model")
    cold = runner.fit_cold_start(options.horizon)
    cold_metrics = runner.backtest_cold_start(options.horizon, options.cold_start_share)
    metrics = _summary(result, champion_name)
    metrics["quantile_coverage"] = coverage
    metrics["cold_start"] = cold_metrics
    if comparison is not None:
        metrics["promotion"] = comparison.to_dict()
    if tuning is not None:
        metrics["tuning"] = tuning
    metrics["selection"] = {**selection.to_dict(), "fallback_skus": len(shipped.fallback)}
    metrics["train_seconds"] = round(time.perf_counter() - t0, 2)
    metrics["training_data"] = training_data(final)
    artifacts: dict[str, Any] = {
        "model": final,
        "selection": shipped,
        "calibration": calibration,
        "cold_start": cold,
        "backtest": result.predictions,
    }
    fields = {
        "data_start": data_start,
        "data_end": last,
        "cutoff": options.cutoff or last,
        "sku_count": sku_count,
        "features": final.feature_names_,
        "strategy": {
            "name": final.strategy,
            "lag_floors": [s.min_lag for s in final.stages_],
            "why": STRATEGY_NOTE,
            "horizon": final.horizon,
            "stages": final.stage_features(),
            "required_history": final.required_history,
        },
        "params": {
            "model": final.model,
            "model_params": final.model_params or {},
            "stage_model_params": final.stages_[0].estimator.get_params() if final.stages_ else {},
            "builder_params": final.builder_params,
            "drop_features": list(final.drop_features),
            "max_train_days": final.max_train_days,
            "max_train_rows": final.max_train_rows,
            "tree_budget": final.tree_budget,
            "folds": options.folds,
            "candidates": list(options.models),
            "ensemble_top": options.ensemble_top,
            "selection": selection.to_dict(),
        },
        "metrics": metrics,
    }
    path = save_bundle(models_dir, artifacts, fields)
    return TrainOutcome(
        path=path,
        version=path.name,
        champion_model=champion_name,
        score=float(metrics["selection_score"]),
        backtest=result,
        metrics=metrics,
        comparison=comparison,
    )
