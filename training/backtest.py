"""Rolling-origin backtests: several cut-offs, each forecasting the next H days from data before it.

Time is never shuffled: for a cut-off ``c`` every model is fitted on rows dated ``<= c`` only
(builders included: their encodings come from those rows), then forecasts ``c+1 .. c+H`` from a
frame whose units after ``c`` are hidden. The predictions of all folds feed the metrics, the model
selection and the quantile calibration.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.cleaning import grouped_starts, not_demand, sku_pieces, store_closures
from training.forecaster import Forecaster
from training.inventory import NoResidualBlocks, replay
from training.metrics import (
    coverage,
    evaluate,
    series_stats,
    value_added,
    value_added_report,
)
from training.predict import BASELINE_DAYS, hide_after
from training.quantiles import QuantileCalibrator

ProgressFn = Callable[[str], None]
BASELINE = "seasonal_naive"
# The metrics a backtest ranks by, all lower-is-better; a report's other figures (bias, sums,
# counts) do not order models, so selecting by them is refused rather than ranked by accident.
SELECTION_METRICS = ("rmsse", "wape", "wrmsse", "mase", "rmse", "mae", "mse", "abs_bias")
LOWER_IS_BETTER = frozenset(SELECTION_METRICS)


# Days between a fold and the same weekdays of the calendar window a year before.
YEAR = 364
# Days of history the year-ago fold needs before its cut-off (half a year: its features' windows
# and enough rows per SKU to train on).
YEAR_FOLD_MIN_HISTORY = 182


def cutoffs(
    last_date: pd.Timestamp,
    *,
    folds: int,
    horizon: int,
    step: int,
    first_date: pd.Timestamp | None = None,
) -> list[pd.Timestamp]:
    """Fold cut-offs, oldest first; the last fold's horizon ends on ``last_date``.

    With ``first_date`` and two folds or more, the oldest fold moves to the calendar window a
    year before the one the model will forecast (cut-off ``last_date - 364``, same weekdays)
    when the history reaches that far (YEAR_FOLD_MIN_HISTORY days, and 2 x horizon, before
    it): folds placed only just
    before the cut-off never see the season being forecast (a December, a closure week).
    """
    last = pd.Timestamp(last_date)
    cuts = [last - pd.Timedelta(days=horizon + step * k) for k in reversed(range(folds))]
    if first_date is None or folds < 2:
        return cuts
    year_ago = last - pd.Timedelta(days=YEAR)
    need = pd.Timedelta(days=max(2 * horizon, YEAR_FOLD_MIN_HISTORY))
    if year_ago < cuts[0] and year_ago - pd.Timestamp(first_date) >= need:
        cuts[0] = year_ago
    return cuts


@dataclass
class BacktestResult:
    """Per-row predictions of every model and fold, and the reports derived from them."""

    predictions: pd.DataFrame  # model, fold, cutoff, sku, date, horizon, y, yhat
    reports: dict[str, dict[str, Any]]
    cutoffs: list[pd.Timestamp]
    horizon: int
    metric: str
    ranking: list[str] = field(default_factory=list)
    fit_seconds: dict[str, float] = field(default_factory=dict)
    # Compositions (ensembles, fallbacks) by name: the models they are made of.
    ensembles: dict[str, list[str]] = field(default_factory=dict)
    # What the scaled metrics were scaled by: series_stats (scales, demand class per SKU) of the
    # earliest fold's history, to score compositions (training.selection). Per-SKU figures only,
    # so a Dask runner gathers them from its partitions; the client never holds the history.
    scale_stats: pd.DataFrame | None = None

    @property
    def best(self) -> str:
        """The model with the best score on the selection metric."""
        return self.ranking[0]

    def score(self, model: str) -> float:
        """A model's overall score on the selection metric."""
        return _score(self.reports[model]["overall"], self.metric)

    def table(self) -> pd.DataFrame:
        """Model comparison: overall metrics per model, best first (the ranking metric first
        when the usual columns lack it)."""
        shown = ("rmsse", "wape", "mase", "rmse", "mae", "bias")
        columns = shown if self.metric in (*shown, "abs_bias") else (self.metric, *shown)
        rows = []
        for name in self.ranking:
            overall = self.reports[name]["overall"]
            rows.append(
                {
                    "model": name,
                    **{k: overall.get(k) for k in columns},
                    "fit_seconds": self.fit_seconds.get(name),
                }
            )
        return pd.DataFrame(rows)

    def to_json(self) -> dict[str, Any]:
        """The JSON document `salesfc backtest --json` writes."""
        baseline = self.reports.get(BASELINE)
        models = {}
        for name, report in self.reports.items():
            entry = dict(report)
            if baseline is not None and name != BASELINE:
                entry["value_added_over_seasonal_naive"] = value_added_report(report, baseline)
            models[name] = entry
        return {
            "cutoffs": [c.date().isoformat() for c in self.cutoffs],
            "horizon": self.horizon,
            "selection_metric": self.metric,
            "ranking": self.ranking,
            "champion": self.best,
            "fit_seconds": self.fit_seconds,
            "models": models,
        }


def _score(overall: dict[str, Any], metric: str) -> float:
    if metric == "abs_bias":
        value = overall.get("bias")
        return abs(value) if value is not None else float("inf")
    value = overall.get(metric)
    if value is None:
        return float("inf")
    return float(value)


def run_backtest(
    history: pd.DataFrame,
    products: pd.DataFrame,
    candidates: Sequence[Forecaster],
    *,
    folds: int = 3,
    horizon: int = 28,
    step: int | None = None,
    metric: str = "rmsse",
    ensemble_top: int = 0,
    progress: ProgressFn | None = None,
) -> BacktestResult:
    """Fit and forecast every candidate at every cut-off; rank by ``metric``."""
    import time

    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"cannot rank by {metric!r}; choose from {', '.join(SELECTION_METRICS)}")
    last = pd.Timestamp(history.loc[history["units"].notna(), "date"].max())
    first = pd.Timestamp(history["date"].min())
    cuts = fold_cutoffs(first, last, folds=folds, horizon=horizon, step=step)
    parts: list[pd.DataFrame] = []
    fit_seconds: dict[str, float] = {}
    # Scaled metrics use the earliest fold's training history, as known before every forecast.
    stats = series_stats(history, until=cuts[0])
    dates = history["date"]
    scored = demand_days(history, products, store_closures(history, products), cuts[0])
    for fold, cut in enumerate(cuts):
        end = cut + pd.Timedelta(days=horizon)
        seen = (dates <= cut).to_numpy()
        actual = history.loc[(dates > cut) & (dates <= end) & scored, ["sku", "date", "units"]]
        # The baselines share one frame per fold: their last BASELINE_DAYS days, hidden after
        # the cut-off (they read nothing else).
        recent: pd.DataFrame | None = None
        for candidate in candidates:
            model = copy.deepcopy(candidate)
            if progress:
                progress(f"fold {fold + 1}/{len(cuts)} (cut-off {cut.date()}): {model.name}")
            t0 = time.perf_counter()
            # Fitted on the rows up to the cut-off, a view of the history (Forecaster.fit).
            model.fit(history, products, visible=seen)
            if candidate.is_baseline:
                if recent is None:
                    recent = hide_after(
                        history.loc[
                            dates > cut - pd.Timedelta(days=BASELINE_DAYS), ["sku", "date", "units"]
                        ],
                        cut,
                        end,
                    )
                pred = model.predict(recent, products, cut, horizon)
            else:
                # The forecast reads the days its features need before the cut-off (as serving
                # reads them: training.predict.forecast_all), not the whole history: the
                # features of the horizon's days are the same, bit for bit.
                since = cut - pd.Timedelta(days=model.required_history)
                pred = _forecast_by_pieces(model, history, products, since, cut, end, horizon)
            del model
            fit_seconds[candidate.name] = (
                fit_seconds.get(candidate.name, 0.0) + time.perf_counter() - t0
            )
            merged = pred.merge(actual, on=["sku", "date"], how="inner")
            parts.append(
                merged.rename(columns={"units": "y", "mean": "yhat"}).assign(
                    model=candidate.name, fold=fold, cutoff=cut
                )
            )
        del recent, seen  # before the next fold's are made
    return scored_backtest(
        parts,
        products,
        stats,
        cuts,
        horizon=horizon,
        metric=metric,
        ensemble_top=ensemble_top,
        fit_seconds=fit_seconds,
        baselines={c.name for c in candidates if c.is_baseline},
    )


def demand_days(
    history: pd.DataFrame,
    products: pd.DataFrame,
    closed_days: pd.MultiIndex,
    after: pd.Timestamp,
) -> np.ndarray:
    """Per row, whether a backtest scores it: every row dated after ``after`` (the first
    cut-off) whose units measure demand (``training.cleaning.not_demand``: not flagged out of
    stock, not a closed day). A closed store's empty day is no forecast error: scored, it
    decided the selection by who forecast December's level lowest (docs/benchmarks.md,
    Selection by volume-weighted RMSSE)."""
    late = (history["date"] > after).to_numpy()
    columns = [c for c in ("sku", "date", "stock_out", "closed") if c in history]
    out = np.zeros(len(history), dtype=bool)
    out[late] = ~not_demand(history.loc[late, columns], products, closed_days)
    return out


def fold_cutoffs(
    first: pd.Timestamp, last: pd.Timestamp, *, folds: int, horizon: int, step: int | None
) -> list[pd.Timestamp]:
    """The folds' cut-offs for data from ``first`` to ``last`` (the oldest a year before the
    forecast's window when the history allows, see ``cutoffs``); too short a history is refused."""
    cuts = cutoffs(last, folds=folds, horizon=horizon, step=step or horizon, first_date=first)
    if cuts[0] - first < pd.Timedelta(days=2 * horizon):
        raise ValueError(
            f"not enough history for {folds} folds of {horizon} days: "
            f"data starts {first.date()}, first cut-off {cuts[0].date()}"
        )
    return cuts


# Full-history rows per piece of a fold's forecast (whole SKUs): its frame, features and their
# inputs are a piece's, ~0.4 GB at M5 scale instead of ~2 GB for the whole catalogue at once.
FORECAST_PIECE_ROWS = 8_000_000


def _forecast_by_pieces(
    model: Forecaster,
    history: pd.DataFrame,
    products: pd.DataFrame,
    since: pd.Timestamp,
    cut: pd.Timestamp,
    end: pd.Timestamp,
    horizon: int,
) -> pd.DataFrame:
    """The model's forecast after ``cut`` from the rows since ``since``, a piece of whole SKUs
    at a time when each SKU's rows come together (every SKU's forecast reads its own rows only:
    the same forecasts), else at once."""
    sku = history["sku"].to_numpy(dtype=object)
    starts = grouped_starts(sku)
    pieces = [] if starts is None else sku_pieces(starts, len(sku), FORECAST_PIECE_ROWS)
    if len(pieces) < 2:
        pieces = [(0, len(sku), 0, 0)]
    parts = []
    for a, b, _, _ in pieces:
        part = history.iloc[a:b]
        frame = hide_after(part[(part["date"] >= since).to_numpy()], cut, end)
        parts.append(model.predict(frame, products, cut, horizon))
        del frame
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def scored_backtest(
    parts: list[pd.DataFrame],
    products: pd.DataFrame,
    stats: pd.DataFrame,
    cuts: list[pd.Timestamp],
    *,
    horizon: int,
    metric: str,
    ensemble_top: int,
    fit_seconds: dict[str, float],
    baselines: Collection[str],
) -> BacktestResult:
    """Reports, ranking and the ensemble from the folds' predictions (model, fold, cutoff, sku,
    date, horizon, y, yhat), the same for every runner (local or Dask); ``parts`` is emptied.

    ``stats`` are the series_stats of the history up to the first cut-off (gathered per SKU
    partition on a cluster); ``baselines`` the candidates' names that are feature-free.
    """
    predictions = pd.concat(parts, ignore_index=True)
    parts.clear()  # the folds' frames let go once concatenated (GBs at M5 scale)
    # Each SKU's segments and demand class looked up once per SKU, added as columns (a join
    # would copy every column: 17M rows at M5 scale).
    codes, skus = pd.factorize(predictions["sku"])
    segments = products.set_index("sku")[["category", "store"]].reindex(skus)
    for column in ("category", "store"):
        values = segments[column].to_numpy()[codes]
        predictions[column] = pd.Series(values, dtype=segments[column].dtype)
    classes = stats["demand_class"].reindex(skus).fillna("no_demand").astype(str).to_numpy()
    predictions["demand_class"] = classes[codes]
    del codes, segments, classes
    model_codes, model_names = pd.factorize(predictions["model"])
    names = [str(n) for n in model_names]
    reports = {
        name: evaluate(predictions[model_codes == k], train_stats=stats)
        for k, name in enumerate(names)
    }
    del model_codes
    ranking = sorted(names, key=lambda n: _score(reports[n]["overall"], metric))
    ensembles: dict[str, list[str]] = {}
    members = ensemble_members(ranking, ensemble_top, is_learned=lambda n: n not in baselines)
    # Chosen by rank, named in a fixed order (the learned model, then baselines by name): two
    # runs whose members tie or swap places (a cluster's trees differ a little) ship one name.
    members.sort(key=lambda n: (n in baselines, n))
    if len(members) > 1:
        ens = ensemble_predictions(predictions, members)
        name = "ensemble(" + "+".join(members) + ")"
        predictions = pd.concat([predictions, ens.assign(model=name)], ignore_index=True)
        reports[name] = evaluate(ens, train_stats=stats)
        ensembles[name] = members
        ranking = sorted(reports, key=lambda n: _score(reports[n]["overall"], metric))
    return BacktestResult(
        predictions,
        reports,
        cuts,
        horizon,
        metric,
        ranking,
        fit_seconds,
        ensembles=ensembles,
        scale_stats=stats,
    )


def ensemble_members(
    ranking: Sequence[str], top: int, *, is_learned: Callable[[str], bool]
) -> list[str]:
    """The best ``top`` models of a ranking that one bundle can ship together: baselines and at
    most one learned model (a bundle holds one fitted forecaster)."""
    members: list[str] = []
    learned = 0
    for name in ranking:
        if len(members) >= max(top, 0):
            break
        if is_learned(name):
            if learned:
                continue
            learned += 1
        members.append(name)
    return members if top > 1 else []


def ensemble_predictions(predictions: pd.DataFrame, members: Sequence[str]) -> pd.DataFrame:
    """The mean forecast of several models, row by row."""
    sub = predictions[predictions["model"].isin(members)]
    keys = ["fold", "cutoff", "sku", "date", "horizon"]
    ens = sub.groupby(keys, sort=False).agg(
        y=("y", "first"),
        yhat=("yhat", "mean"),
        category=("category", "first"),
        store=("store", "first"),
        demand_class=("demand_class", "first"),
    )
    return ens.reset_index()


def calibrate(result: BacktestResult, model: str) -> QuantileCalibrator:
    """A quantile calibrator fitted on one model's backtest residuals."""
    rows = result.predictions[result.predictions["model"] == model]
    return QuantileCalibrator().fit(
        rows["y"].to_numpy(), rows["yhat"].to_numpy(), rows["horizon"].to_numpy()
    )


def coverage_report(
    result: BacktestResult, model: str, quantiles: Sequence[float] = (0.1, 0.5, 0.9)
) -> dict[str, Any]:
    """Calibration checked honestly: fit on all folds but the last, measure on the last."""
    rows = result.predictions[result.predictions["model"] == model]
    last = rows["fold"].max()
    fit_rows, test_rows = rows[rows["fold"] < last], rows[rows["fold"] == last]
    if fit_rows.empty:
        fit_rows = test_rows
    cal = QuantileCalibrator().fit(
        fit_rows["y"].to_numpy(), fit_rows["yhat"].to_numpy(), fit_rows["horizon"].to_numpy()
    )
    q = cal.predict(test_rows["yhat"].to_numpy(), test_rows["horizon"].to_numpy(), quantiles)
    y = test_rows["y"].to_numpy(dtype=np.float64)
    exceed = {f"{qq:g}": float(np.mean(y <= q[:, i])) for i, qq in enumerate(quantiles)}
    return {
        "quantiles": list(quantiles),
        "share_at_or_below": exceed,
        "interval": [min(quantiles), max(quantiles)],
        "interval_coverage": coverage(y, q[:, 0], q[:, -1]),
        "nominal_interval_coverage": max(quantiles) - min(quantiles),
        "rows": len(test_rows),
    }


def inventory_report(result: BacktestResult, model: str | None = None) -> dict[str, Any]:
    """The (R, S) policy replayed on a model's backtest (training.inventory.replay)."""
    name = model or result.best
    rows = result.predictions[result.predictions["model"] == name]
    try:
        return {"model": name, **replay(rows)}
    except NoResidualBlocks as exc:
        return {"model": name, "detail": str(exc)}


__all__ = [
    "SELECTION_METRICS",
    "BacktestResult",
    "calibrate",
    "coverage_report",
    "cutoffs",
    "demand_days",
    "fold_cutoffs",
    "hide_after",
    "inventory_report",
    "run_backtest",
    "scored_backtest",
    "value_added",
]
