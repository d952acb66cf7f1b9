"""What training asks of the history, answered in memory (``LocalRunner``) or on a cluster.

A runner owns the history up to the cut-off and the products; ``training.pipeline.train`` asks it
for the data window, a rolling-origin backtest, a fitted forecaster, the SKUs' demand classes
(for the selection's per-class fallbacks) and the cold-start model. The Dask runner
(``training.engine.dask_runner``) answers the same questions over SKU partitions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from training.backtest import BacktestResult, run_backtest
from training.cleaning import grouped_starts, sku_codes
from training.coldstart import backtest_cold_start, fit_cold_start
from training.forecaster import Forecaster, first_day, last_day
from training.selection import demand_classes

ProgressFn = Callable[[str], None]


class BacktestFn(Protocol):
    """A rolling-origin backtest of candidates over the runner's history."""

    def __call__(
        self,
        candidates: Sequence[Forecaster],
        *,
        folds: int,
        horizon: int,
        step: int | None,
        metric: str,
        ensemble_top: int = 0,
        progress: ProgressFn | None = None,
    ) -> BacktestResult: ...


class HistoryRunner(Protocol):
    """The history training reads, and the work done on it."""

    products: pd.DataFrame

    def window(self) -> tuple[dt.date, dt.date, int]:
        """The first and last day with known units and the SKUs that have any."""
        ...

    def backtest(
        self,
        candidates: Sequence[Forecaster],
        *,
        folds: int,
        horizon: int,
        step: int | None,
        metric: str,
        ensemble_top: int = 0,
        progress: ProgressFn | None = None,
    ) -> BacktestResult:
        """Fit and forecast every candidate at every cut-off; rank by ``metric``."""
        ...

    def fit(self, model: Forecaster, progress: ProgressFn | None = None) -> Forecaster:
        """The model fitted on the whole history."""
        ...

    def demand_classes(self) -> pd.Series:
        """SKU -> demand class on the whole history (training.selection.demand_classes)."""
        ...

    def fit_cold_start(self, horizon: int) -> Forecaster:
        """The attribute-only model fitted on every SKU's history."""
        ...

    def backtest_cold_start(self, horizon: int, share: float) -> dict[str, Any]:
        """The cold-start model scored on a sample of SKUs whose history is hidden."""
        ...


class LocalRunner:
    """The whole history in this process's memory: training's functions called as they are."""

    def __init__(self, history: pd.DataFrame, products: pd.DataFrame) -> None:
        self.history = history
        self.products = products

    def window(self) -> tuple[dt.date, dt.date, int]:
        """The first and last day with known units and the SKUs that have any."""
        history = self.history
        known = history["units"].notna().to_numpy()
        # Without copying the known rows' dates and SKU strings (GBs at M5 scale).
        sku = history["sku"].to_numpy(dtype=object)
        starts = grouped_starts(sku)
        if starts is not None:  # each SKU's rows together: count by runs
            selling = np.logical_or.reduceat(known, starts) if len(starts) else known[:0]
        else:
            codes, _ = sku_codes(sku)
            selling = np.bincount(codes, weights=known) > 0
        first, last = first_day(history, known), last_day(history, known)
        return first.date(), last.date(), int(selling.sum())

    def backtest(
        self,
        candidates: Sequence[Forecaster],
        *,
        folds: int,
        horizon: int,
        step: int | None,
        metric: str,
        ensemble_top: int = 0,
        progress: ProgressFn | None = None,
    ) -> BacktestResult:
        """training.backtest.run_backtest on the history."""
        return run_backtest(
            self.history,
            self.products,
            candidates,
            folds=folds,
            horizon=horizon,
            step=step,
            metric=metric,
            ensemble_top=ensemble_top,
            progress=progress,
        )

    def fit(self, model: Forecaster, progress: ProgressFn | None = None) -> Forecaster:
        """Forecaster.fit on the history."""
        return model.fit(self.history, self.products, progress=progress)

    def demand_classes(self) -> pd.Series:
        """training.selection.demand_classes of the history."""
        return demand_classes(self.history)

    def fit_cold_start(self, horizon: int) -> Forecaster:
        """training.coldstart.fit_cold_start on the history."""
        return fit_cold_start(self.history, self.products, horizon=horizon)

    def backtest_cold_start(self, horizon: int, share: float) -> dict[str, Any]:
        """training.coldstart.backtest_cold_start on the history."""
        return backtest_cold_start(self.history, self.products, horizon=horizon, share=share)
