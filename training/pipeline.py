"""Training services used by the CLI and the retrain worker: backtest, train, forecast-all.

``train`` reads the history up to a cut-off through the point-in-time reader, backtests the
candidate models by rolling origin, picks the champion by the configured metric, calibrates its
quantiles on the backtest residuals, refits it on all the data, fits the cold-start model and
writes one bundle. Whether the new bundle becomes the champion is the caller's decision (the
champion/challenger gate compares ``metrics["selection_score"]`` of both).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from featurestore.readers import last_sales_date, read_frame, read_products
from training.backtest import (
    BacktestResult,
    calibrate,
    coverage_report,
    hide_after,
    run_backtest,
)
from training.bundle import Bundle, save_bundle
from training.coldstart import backtest_cold_start, fit_cold_start
from training.features import Prepared, prepare, prepare_arrays
from training.forecaster import (
    BASELINES,
    STRATEGY_NOTE,
    Forecaster,
)
from training.memory import release_large_blocks
from training.metrics import value_added

# Re-exported: the options were defined here before training.options.
from training.options import DEFAULT_MODELS as DEFAULT_MODELS
from training.options import TrainOptions as TrainOptions
from training.quantiles import QuantileCalibrator

ProgressFn = Callable[[str], None]
ALL_MODELS = (
    "seasonal_naive",
    "moving_average",
    "linear",
    "tree",
    "forest",
    "lgbm_tweedie",
    "lgbm_poisson",
    "lgbm_l2",
    "mlp",
)


class TrainingError(RuntimeError):
    """Training cannot run on the data at hand (too little history, no SKUs...)."""


@dataclass
class TrainOutcome:
    """A written bundle and the backtest behind it."""

    path: Path
    version: str
    champion_model: str
    score: float
    backtest: BacktestResult
    metrics: dict[str, Any]


def load_history(
    engine: Engine, cutoff: dt.date | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All SKUs' history up to the cut-off (as known then) and their attributes."""
    history = read_frame(engine, end=cutoff, as_of=cutoff)
    if history.empty:
        raise TrainingError("the feature store has no sales history: ingest data first")
    products = read_products(engine)
    return history, products


def _candidates(options: TrainOptions) -> list[Forecaster]:
    unknown = sorted(set(options.models) - set(ALL_MODELS))
    if unknown:
        raise TrainingError(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(ALL_MODELS)}"
        )
    out = []
    for name in options.models:
        params = dict(options.model_params.get(name, {}))
        if options.n_estimators and name.startswith("lgbm"):
            params.setdefault("n_estimators", options.n_estimators)
        out.append(
            Forecaster(
                model=name, strategy=options.strategy, horizon=options.horizon, model_params=params
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
    release_large_blocks()
    return run_backtest(
        history,
        products,
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


def train(
    engine: Engine,
    models_dir: Path,
    options: TrainOptions,
    progress: ProgressFn | None = None,
) -> TrainOutcome:
    """Backtest, pick, calibrate, refit and save a bundle; returns where and what."""
    release_large_blocks()
    t0 = time.perf_counter()
    history, products = load_history(engine, options.cutoff)
    result = backtest(history, products, options, progress)
    learned = [n for n in result.ranking if n.split("/")[0] not in BASELINES]
    champion_name = learned[0] if learned and not learned[0].startswith("ensemble") else None
    if champion_name is None:
        champion_name = learned[1] if len(learned) > 1 else result.best
    model_name = champion_name.split("/")[0]
    if progress:
        progress(f"champion {champion_name}: refitting on all data")
    final = next(c for c in _candidates(options) if c.model == model_name)
    final.fit(history, products, progress=progress)
    calibration = calibrate(result, champion_name)
    coverage = coverage_report(result, champion_name)
    if progress:
        progress("cold-start model")
    cold = fit_cold_start(history, products, horizon=options.horizon)
    cold_metrics = backtest_cold_start(
        history, products, horizon=options.horizon, share=options.cold_start_share
    )
    metrics = _summary(result, champion_name)
    metrics["quantile_coverage"] = coverage
    metrics["cold_start"] = cold_metrics
    metrics["train_seconds"] = round(time.perf_counter() - t0, 2)
    known = history[history["units"].notna()]
    last = pd.Timestamp(known["date"].max()).date()
    artifacts: dict[str, Any] = {
        "model": final,
        "calibration": calibration,
        "cold_start": cold,
        "backtest": result.predictions[
            result.predictions["model"].isin([champion_name, "seasonal_naive"])
        ].reset_index(drop=True),
    }
    fields = {
        "data_start": pd.Timestamp(known["date"].min()).date(),
        "data_end": last,
        "cutoff": options.cutoff or last,
        "sku_count": int(known["sku"].nunique()),
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
    )


# Below this many rows a LightGBM predict runs on one thread: starting OpenMP's team costs more
# than it saves on a few dozen rows (and serving runs requests side by side anyway).
SMALL_PREDICT_ROWS = 1000


@dataclass
class Forecasts:
    """Forecast rows (grouped by SKU, by date within one) as arrays: what serving serialises."""

    sku: np.ndarray  # object, per row
    day: np.ndarray  # int64 days since 1970-01-01, per row
    horizon: np.ndarray  # int16, per row
    mean: np.ndarray  # float64, per row
    quantiles: np.ndarray  # float64, (rows, levels)
    cold_start: np.ndarray  # bool, per row
    levels: list[float]

    def frame(self) -> pd.DataFrame:
        """sku, date, horizon, mean, one column per quantile (p10...), cold_start flag."""
        out = pd.DataFrame(
            {
                "sku": pd.Series(self.sku, dtype=object),
                "date": self.day.astype("datetime64[D]").astype("datetime64[ns]"),
                "horizon": self.horizon,
                "mean": self.mean,
            }
        )
        for i, level in enumerate(self.levels):
            out[quantile_column(level)] = self.quantiles[:, i]
        out["cold_start"] = self.cold_start
        return out


def _predict(estimator: Any, X: np.ndarray) -> np.ndarray:
    """The estimator's predict; a LightGBM booster on one thread for small inputs."""
    booster = getattr(estimator, "booster_", None)
    if booster is not None and len(X) < SMALL_PREDICT_ROWS:
        raw = booster.predict(X, num_iteration=estimator.best_iteration_, num_threads=1)
        return np.clip(np.asarray(raw, dtype=np.float64).ravel(), 0.0, None)
    return np.asarray(estimator.predict(X), dtype=np.float64)


def _staged(model: Forecaster) -> bool:
    """Whether one pass of its stages over the horizon rows forecasts (direct, multi)."""
    return model.model not in BASELINES and model.strategy != "recursive" and bool(model.stages_)


@dataclass
class BundleForecaster:
    """The serving-side view of a loaded bundle: point forecasts plus calibrated quantiles."""

    bundle: Bundle

    @property
    def model(self) -> Forecaster:
        model: Forecaster = self.bundle.artifacts["model"]
        return model

    @property
    def cold_model(self) -> Forecaster:
        model: Forecaster = self.bundle.artifacts["cold_start"]
        return model

    @property
    def calibration(self) -> QuantileCalibrator:
        cal: QuantileCalibrator = self.bundle.artifacts["calibration"]
        return cal

    @property
    def history_days(self) -> int:
        """Days of history up to the origin that a forecast reads (both models' builders)."""
        days = 1
        for model in (self.model, self.cold_model):
            if model.model not in BASELINES and model.stages_:
                # Before its first target a builder needs required_history days; later targets
                # need fewer (recursive ones read forecasts), so not the horizon on top.
                days = max(days, *(s.builder.required_history for s in model.stages_))
            else:
                days = max(days, model.required_history)
        return days

    def forecast(
        self,
        frame: pd.DataFrame,
        products: pd.DataFrame,
        origin: dt.date | pd.Timestamp,
        horizon: int,
        quantiles: Sequence[float],
    ) -> pd.DataFrame:
        """sku, date, horizon, mean, one column per quantile (p10...), cold_start flag."""
        return self.forecast_arrays(frame, products, origin, horizon, quantiles).frame()

    def forecast_arrays(
        self,
        frame: pd.DataFrame | Mapping[str, np.ndarray],
        products: pd.DataFrame,
        origin: dt.date | pd.Timestamp,
        horizon: int,
        quantiles: Sequence[float],
    ) -> Forecasts:
        """The forecast rows as arrays, grouped by SKU as the frame is (readers sort by SKU).

        ``frame`` is the history frame or its columns as numpy arrays (``date`` as datetime64,
        each column with the frame's dtype, as ``featurestore.window_cache`` slices them): the
        arrays skip building and re-reading a frame, the answers are the same.

        SKUs with fewer known days than the model's ``min_rows_per_sku`` are answered by the
        cold-start model. Direct and multi-stage models run on numpy from the frame's columns
        (the stages' builders pick their target rows); recursive and baseline models go through
        ``Forecaster.predict``.
        """
        levels = [float(q) for q in quantiles]
        o = int(pd.Timestamp(origin).to_datetime64().astype("datetime64[D]").astype(np.int64))
        if isinstance(frame, pd.DataFrame):
            frame = frame.reset_index(drop=True)
            sku = frame["sku"].to_numpy(dtype=object)
            dates = frame["date"].to_numpy()
            units = frame["units"].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            sku = np.asarray(frame["sku"], dtype=object)
            dates = np.asarray(frame["date"])
            units = np.asarray(frame["units"], dtype=np.float64)
        days = dates.astype("datetime64[D]").astype(np.int64)
        day = days - o
        if len(sku) == 0:
            raise ValueError("nothing to forecast: the frame is empty")
        change = np.empty(len(sku), dtype=bool)
        change[:1] = True
        np.not_equal(sku[1:], sku[:-1], out=change[1:])
        codes = np.cumsum(change) - 1
        known = np.bincount(codes, weights=(day <= 0) & ~np.isnan(units), minlength=codes[-1] + 1)
        target = (day >= 1) & (day <= horizon)
        cold = (known < self.model.min_rows_per_sku)[codes]
        out = np.full(len(sku), np.nan)
        inputs = _Inputs(frame, products, sku, dates, days)
        for model, part in ((self.model, ~cold), (self.cold_model, cold)):
            rows = target & part
            if rows.any():
                out[rows] = self._predict(model, inputs, pd.Timestamp(origin), horizon, day, rows)
        mean = out[target]
        h = day[target].astype(np.int16)
        q = self.calibration.predict(mean, h, levels)
        return Forecasts(
            sku=sku[target],
            day=days[target],
            horizon=h,
            mean=mean,
            quantiles=np.asarray(q, dtype=np.float64).reshape(len(mean), len(levels)),
            cold_start=cold[target],
            levels=levels,
        )

    @staticmethod
    def _predict(
        model: Forecaster,
        inputs: _Inputs,
        origin: pd.Timestamp,
        horizon: int,
        day: np.ndarray,
        rows: np.ndarray,
    ) -> np.ndarray:
        """The model's means for the chosen horizon rows (in frame order)."""
        products = inputs.products
        if _staged(model):
            out = np.full(len(day), np.nan)
            prepared = inputs.prepared()  # the frames read once for every stage
            for stage in model.stages_:
                mine = rows & (day >= stage.first_h) & (day <= stage.last_h)
                if mine.any():
                    X = stage.builder.transform(None, products, rows=mine, prepared=prepared).X
                    out[mine] = _predict(stage.estimator, X[:, stage.keep])
            return out[rows]
        frame = inputs.frame()
        mine = frame["sku"].isin(frame.loc[rows, "sku"].unique()).to_numpy()
        part = frame[mine]
        pred = model.predict(part, products, origin, horizon)
        # The predictions in the frame's row order (they may come in another).
        at = pd.MultiIndex.from_frame(part[["sku", "date"]]).get_indexer(
            pd.MultiIndex.from_frame(pred[["sku", "date"]])
        )
        out = np.full(len(part), np.nan)
        ok = at >= 0
        out[at[ok]] = pred["mean"].to_numpy(dtype=np.float64)[ok]
        full = np.full(len(frame), np.nan)
        full[mine] = out
        return full[rows]


@dataclass
class _Inputs:
    """A forecast's history (a frame or its column arrays) and products, each form made once."""

    source: pd.DataFrame | Mapping[str, np.ndarray]
    products: pd.DataFrame
    sku: np.ndarray
    dates: np.ndarray
    days: np.ndarray
    _frame: pd.DataFrame | None = None
    _prepared: Prepared | None = None

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            if isinstance(self.source, pd.DataFrame):
                self._frame = self.source
            else:
                data: dict[str, Any] = dict(self.source)
                data["sku"] = pd.Series(self.sku, dtype=object)
                self._frame = pd.DataFrame(data)
        return self._frame

    def prepared(self) -> Prepared:
        if self._prepared is None:
            if isinstance(self.source, pd.DataFrame):
                self._prepared = prepare(self.source, self.products)
            else:
                self._prepared = prepare_arrays(
                    sku=self.sku,
                    dates=self.dates,
                    days=self.days,
                    columns={c: np.asarray(v) for c, v in self.source.items()},
                    products=self.products,
                )
        return self._prepared


def quantile_column(level: float) -> str:
    """Column name of a quantile: 0.1 -> p10, 0.975 -> p97.5."""
    return f"p{level * 100:g}"


def forecast_all(
    engine: Engine,
    bundle: Bundle,
    *,
    as_of: dt.date | None = None,
    horizon: int | None = None,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    skus: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Forecast every active SKU (or the given ones) from the bundle: one row per SKU and day."""
    fc = BundleForecaster(bundle)
    horizon = horizon or fc.model.horizon
    products = read_products(engine, skus)
    active = products[products["status"] != "discontinued"]
    if active.empty:
        raise TrainingError("no active SKUs to forecast")
    last = as_of or last_sales_date(engine)
    if last is None:
        raise TrainingError("the feature store has no sales history: ingest data first")
    origin = pd.Timestamp(last)
    start = (origin - pd.Timedelta(days=fc.model.required_history)).date()
    end = (origin + pd.Timedelta(days=horizon)).date()
    frame = read_frame(engine, skus=list(active["sku"]), start=start, end=end, as_of=origin.date())
    frame = hide_after(frame, origin, pd.Timestamp(end))
    out = fc.forecast(frame, products, origin, horizon, quantiles)
    out = out.sort_values(["sku", "date"], kind="stable").reset_index(drop=True)
    out["date"] = pd.to_datetime(out["date"]).dt.date
    columns = ["sku", "date", "mean", *[quantile_column(q) for q in quantiles], "cold_start"]
    return out[columns]


def write_forecasts(frame: pd.DataFrame, out: Path) -> None:
    """Write forecasts as Parquet or CSV by the file's suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise TrainingError(f"unsupported output {out.name}: use .parquet or .csv")
