"""What a Dask worker runs on its own SKU partition: plain functions of one partition each.

Every function takes a ``Partition`` (the history of one SKU range, read by the worker itself
from the feature store) and returns something small (totals, counts, predictions) or the
partition's training matrix, which stays on the worker for ``lightgbm.dask``. The features come
from the very ``FeatureBuilder`` the local engine fits, fitted on the client from the partitions'
per-SKU totals (``FeatureBuilder.fit_totals``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from featurestore.db import engine_for
from featurestore.readers import SkuRange, range_skus, read_range
from training.backtest import demand_days
from training.cleaning import clean_targets, store_day_totals
from training.coldstart import cold_start_forecasts
from training.features import FeatureBuilder, sku_totals
from training.forecaster import Forecaster, _training_rows, capped_targets
from training.metrics import series_stats
from training.predict import BASELINE_DAYS, forecast_all, hide_after
from training.selection import demand_classes as classify


@dataclass
class Partition:
    """One SKU range's dense history up to the cut-off (as known then) and its products."""

    part: SkuRange
    history: pd.DataFrame
    products: pd.DataFrame


@dataclass(frozen=True)
class Rows:
    """Which rows of a partition a fit trains on: up to ``cut``, without ``exclude``'s SKUs."""

    cut: pd.Timestamp | None = None
    exclude: frozenset[str] = frozenset()

    def of(self, history: pd.DataFrame) -> pd.DataFrame:
        keep = np.ones(len(history), dtype=bool)
        if self.cut is not None:
            keep &= (history["date"] <= self.cut).to_numpy()
        if self.exclude:
            keep &= ~history["sku"].isin(self.exclude).to_numpy()
        return history if keep.all() else history[keep].reset_index(drop=True)


def load(url: str, part: SkuRange, cutoff: dt.date | None) -> Partition:
    """Read one SKU range's history and products straight from the store (on the worker)."""
    history, products = read_range(engine_for(url), part, end=cutoff, as_of=cutoff)
    return Partition(part, history, products)


def summary(p: Partition) -> dict[str, Any]:
    """First and last day with known units, SKUs with any, rows and the first day of the frame."""
    history = p.history
    known = history["units"].notna().to_numpy()
    dates = history.loc[known, "date"]
    return {
        "rows": len(history),
        "skus": int(history["sku"].nunique()),
        "known_skus": int(history.loc[known, "sku"].nunique()),
        "first_known": None if dates.empty else pd.Timestamp(dates.min()),
        "last_known": None if dates.empty else pd.Timestamp(dates.max()),
        "first_date": None if history.empty else pd.Timestamp(history["date"].min()),
    }


def totals(p: Partition, rows: Rows) -> pd.DataFrame:
    """Per-SKU totals of the known units and prices of the fit's rows (for fit_totals)."""
    return sku_totals(rows.of(p.history))


def scale_stats(p: Partition, cut: pd.Timestamp) -> pd.DataFrame:
    """series_stats of the history up to ``cut`` (the scaled metrics' scales), per SKU."""
    history = p.history
    return series_stats(history, until=cut)


def demand_classes(p: Partition) -> pd.Series:
    """SKU -> demand class of the partition's SKUs on their whole history."""
    return classify(p.history)


def store_totals(p: Partition, rows: Rows) -> pd.DataFrame:
    """Units per (store, date) of the fit's rows (the store closures are read from their sum)."""
    return store_day_totals(rows.of(p.history), p.products)


def _eligible(
    p: Partition,
    history: pd.DataFrame,
    model: Forecaster,
    last: pd.Timestamp,
    closed_days: pd.MultiIndex | None,
) -> tuple[np.ndarray, dict[str, int]]:
    """The forecaster's rows worth training on (censored rows left out as Forecaster.fit leaves
    them) and the cleaning's counts; the recent window ends on the whole history's last known
    day ``last`` (a partition alone may end earlier)."""
    cleaning = clean_targets(history, p.products, closed_days) if model.clean else None
    censored = None if cleaning is None else cleaning.censored
    mask = np.asarray(
        _training_rows(history, model.min_rows_per_sku, None, None, censored), dtype=bool
    )
    if model.max_train_days is not None:
        mask &= (history["date"] > last - pd.Timedelta(days=model.max_train_days)).to_numpy()
    return mask, ({} if cleaning is None else cleaning.summary())


def eligible_rows(
    p: Partition,
    rows: Rows,
    model: Forecaster,
    last: pd.Timestamp,
    closed_days: pd.MultiIndex | None = None,
) -> tuple[int, dict[str, int]]:
    """How many rows of the partition the model could train on (before any sampling), and the
    cleaning's counts of the partition's rows."""
    mask, counts = _eligible(p, rows.of(p.history), model, last, closed_days)
    return int(mask.sum()), counts


def design(
    p: Partition,
    rows: Rows,
    model: Forecaster,
    last: pd.Timestamp,
    keep: int | None,
    seed: int,
    builder: FeatureBuilder,
    cols: np.ndarray,
    closed_days: pd.MultiIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The partition's training matrix (float32, the stage's columns) and targets.

    ``keep`` rows of the eligible ones are drawn uniformly (None: all), the partition's share of
    the model's ``max_train_rows``.
    """
    history = rows.of(p.history)
    mask, _ = _eligible(p, history, model, last, closed_days)
    if keep is not None and keep < int(mask.sum()):
        chosen = np.random.default_rng(seed).choice(np.flatnonzero(mask), size=keep, replace=False)
        mask = np.zeros(len(mask), dtype=bool)
        mask[chosen] = True
    fm = builder.transform(history, p.products, rows=mask)
    X = fm.X if len(cols) == fm.X.shape[1] else fm.X[:, cols]
    y = capped_targets(builder, fm.sku, fm.y)  # as a local fit caps them
    return np.ascontiguousarray(X, dtype=np.float32), y.astype(np.float32)


def label_sum(pair: tuple[np.ndarray, np.ndarray]) -> float:
    """The sum of a design's targets."""
    return float(np.sum(pair[1], dtype=np.float64))


def stacked(pairs: list[tuple[np.ndarray, np.ndarray]], *, matrix: bool) -> np.ndarray:
    """The features (``matrix``) or the targets of designs, one after another."""
    arrays = [pair[0] if matrix else pair[1] for pair in pairs]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def scored_days(p: Partition, closed_days: pd.MultiIndex, after: pd.Timestamp) -> np.ndarray:
    """Per row of the partition, whether a backtest with its first cut-off at ``after`` scores
    it (training.backtest.demand_days; ``closed_days``: the whole catalogue's closures)."""
    return demand_days(p.history, p.products, closed_days, after)


def fold_predictions(
    p: Partition,
    model: Forecaster,
    cut: pd.Timestamp,
    horizon: int,
    scored: np.ndarray,
) -> pd.DataFrame:
    """The fold's forecasts after ``cut`` beside the units of the days it is scored on (as
    run_backtest makes them; ``scored``: the partition's ``scored_days``)."""
    history = p.history
    end = cut + pd.Timedelta(days=horizon)
    dates = history["date"]
    actual = history.loc[(dates > cut) & (dates <= end) & scored, ["sku", "date", "units"]]
    if actual.empty:
        return pd.DataFrame(columns=["sku", "date", "horizon", "y", "yhat"])
    if model.is_baseline:
        # As run_backtest: the baselines read only their last BASELINE_DAYS days.
        history = history[history["date"] > cut - pd.Timedelta(days=BASELINE_DAYS)]
    frame = hide_after(history, cut, end)
    pred = model.predict(frame, p.products, cut, horizon)
    merged = pred.merge(actual, on=["sku", "date"], how="inner")
    return merged.rename(columns={"units": "y", "mean": "yhat"})


def cold_predictions(
    p: Partition,
    model: Forecaster,
    hidden: frozenset[str],
    cut: pd.Timestamp,
    last: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The cold-start backtest's forecasts and scales of the partition's hidden SKUs."""
    mine = p.history["sku"].isin(hidden).to_numpy()
    if not mine.any():
        return None
    return cold_start_forecasts(model, p.history[mine], p.products, cut, last)


def forecast_range(
    url: str,
    part: SkuRange,
    bundle: Any,
    as_of: dt.date,
    horizon: int | None,
    quantiles: list[float],
) -> pd.DataFrame:
    """forecast_all of one range's active SKUs, read by the worker itself."""
    engine = engine_for(url)
    skus = range_skus(engine, part, active_only=True)
    if not skus:
        return pd.DataFrame()
    return forecast_all(
        engine, bundle, as_of=as_of, horizon=horizon, quantiles=quantiles, skus=skus
    )
