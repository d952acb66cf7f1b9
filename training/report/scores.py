"""What the report computes from a bundle's backtest rows: errors per SKU and group, the SKUs to
show, quantile calibration curves (in-sample and held out) and feature importance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from training.quantiles import QuantileCalibrator

BASELINE = "seasonal_naive"
CALIBRATION_LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
BAND = (0.1, 0.9)
# Caps on the rows the held-out calibration check refits on and scores: the calibrator's level map
# is an (n rows x 199) matrix, which must stay small for a 10k-SKU backtest.
MAX_CALIBRATION_FIT_ROWS = 50_000
MAX_CALIBRATION_TEST_ROWS = 200_000


def grouped_errors(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """WAPE, bias and volume per value of ``key`` from backtest rows."""
    err = (frame["yhat"] - frame["y"]).abs()
    g = frame.assign(abs_err=err).groupby(key, observed=True, sort=True)
    sums = g[["y", "yhat", "abs_err"]].sum()
    y = sums["y"].where(sums["y"] != 0)
    return pd.DataFrame(
        {
            "wape": sums["abs_err"] / y,
            "bias": (sums["yhat"] - sums["y"]) / y,
            "volume": sums["y"],
        }
    )


def sku_errors(backtest: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per-SKU volume, absolute error, WAPE and bias of one model over its backtest rows."""
    rows = backtest[backtest["model"] == model]
    out = grouped_errors(rows, "sku")
    out["abs_error"] = (
        (rows["yhat"] - rows["y"]).abs().groupby(rows["sku"], observed=True, sort=True).sum()
    )
    return out


def pick_skus(
    backtest: pd.DataFrame, model: str, *, n_top: int = 3, n_worst: int = 3
) -> tuple[list[str], list[str]]:
    """The top-volume SKUs and the worst ones by WAPE among SKUs selling at least the median."""
    per_sku = sku_errors(backtest, model)
    by_volume = per_sku.sort_values(["volume", "abs_error"], ascending=False, kind="stable")
    top = [str(s) for s in by_volume.index[:n_top]]
    sold = per_sku[per_sku["volume"] > 0]
    # Below-median sellers are left out: a SKU that sold two units has a huge WAPE and tells little.
    eligible = sold[(sold["volume"] >= sold["volume"].median()) & ~sold.index.isin(top)]
    worst = eligible.sort_values(["wape", "volume"], ascending=False, kind="stable")
    return top, [str(s) for s in worst.index[:n_worst]]


def calibration_curve(
    calibrator: QuantileCalibrator,
    rows: pd.DataFrame,
    levels: Sequence[float] = CALIBRATION_LEVELS,
) -> pd.DataFrame:
    """Observed share strictly below and at-or-below each quantile forecast, per nominal level.

    Sales are counts, so a quantile forecast is right when the nominal level lies between the two
    shares (ties with the forecast, mostly zeros, belong to both sides). Each level is asked for
    on its own, so no other level's non-crossing adjustment moves it.
    """
    y = rows["y"].to_numpy(dtype=np.float64)
    yhat = rows["yhat"].to_numpy(dtype=np.float64)
    horizon = rows["horizon"].to_numpy()
    q = np.column_stack([calibrator.predict(yhat, horizon, [level])[:, 0] for level in levels])
    return pd.DataFrame(
        {
            "level": list(levels),
            "below": (y[:, None] < q).mean(axis=0),
            "at_or_below": (y[:, None] <= q).mean(axis=0),
        }
    )


def sample_rows(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    return rows if len(rows) <= n else rows.sample(n=n, random_state=seed)


def held_out_calibration(
    rows: pd.DataFrame, levels: Sequence[float] = CALIBRATION_LEVELS
) -> pd.DataFrame | None:
    """A calibrator refitted on all folds but the last, checked on the last (None with one fold)."""
    last = rows["fold"].max()
    fit_rows, test_rows = rows[rows["fold"] < last], rows[rows["fold"] == last]
    if fit_rows.empty or test_rows.empty:
        return None
    fit_rows = sample_rows(fit_rows, MAX_CALIBRATION_FIT_ROWS)
    cal = QuantileCalibrator().fit(
        fit_rows["y"].to_numpy(), fit_rows["yhat"].to_numpy(), fit_rows["horizon"].to_numpy()
    )
    return calibration_curve(cal, sample_rows(test_rows, MAX_CALIBRATION_TEST_ROWS), levels)


def feature_importance(model: Any) -> tuple[pd.Series, int]:
    """Importance share per feature averaged over the model's stages, and the stages counted."""
    shares: list[pd.Series] = []
    for stage in getattr(model, "stages_", None) or []:
        estimator = getattr(stage, "estimator", None)
        getter = getattr(estimator, "feature_importance", None)
        found = getter() if callable(getter) else None
        if found:
            shares.append(pd.Series(found, dtype=np.float64))
    if not shares:
        return pd.Series(dtype=np.float64), 0
    # A feature a stage lacks counts as zero there, so the mean still sums to one.
    mean = pd.concat(shares, axis=1).fillna(0.0).mean(axis=1)
    return mean.sort_values(ascending=False, kind="stable"), len(shares)
