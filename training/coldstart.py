"""Cold start: forecasts for SKUs with no or little history, from their attributes alone.

The cold-start model is the same Forecaster with a builder that leaves out every feature computed
from the SKU's own sales (lags, rolling statistics, intermittency, age): what remains is hierarchy,
store, price, promotions, calendar and the mean encodings of the SKU's department, category and
store. It is backtested by hiding the whole history of a sample of SKUs at the last cut-off.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from training.feature_groups import HISTORY_GROUP
from training.forecaster import Forecaster
from training.metrics import bias, rmsse, series_stats, wape


def cold_start_forecaster(horizon: int, **model_params: Any) -> Forecaster:
    """An unfitted attribute-only forecaster (direct: its features need no history)."""
    return Forecaster(
        model="lgbm_tweedie",
        strategy="direct",
        horizon=horizon,
        drop_groups=(HISTORY_GROUP,),
        model_params={"n_estimators": 200, **model_params},
        min_rows_per_sku=0,
    )


def fit_cold_start(history: pd.DataFrame, products: pd.DataFrame, *, horizon: int) -> Forecaster:
    """Fit the attribute-only forecaster on every SKU's history."""
    return cold_start_forecaster(horizon).fit(history, products)


def backtest_cold_start(
    history: pd.DataFrame,
    products: pd.DataFrame,
    *,
    horizon: int,
    share: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """Hide the history of a sample of SKUs, forecast their next ``horizon`` days, score it."""
    known = history[history["units"].notna()]
    last = pd.Timestamp(known["date"].max())
    cut = last - pd.Timedelta(days=horizon)
    skus = np.sort(known["sku"].unique())
    n_hidden = max(1, round(len(skus) * share))
    if len(skus) < 2:
        return {"skus": 0, "detail": "too few SKUs to hide some"}
    hidden = set(np.random.default_rng(seed).choice(skus, size=n_hidden, replace=False))
    is_hidden = history["sku"].isin(hidden)
    train = history[~is_hidden & (history["date"] <= cut)].reset_index(drop=True)
    window = history[is_hidden & (history["date"] > cut) & (history["date"] <= last)]
    frame = window.assign(units=np.nan).reset_index(drop=True)
    model = cold_start_forecaster(horizon).fit(train, products)
    pred = model.predict(frame, products, cut, horizon)
    merged = pred.merge(window[["sku", "date", "units"]], on=["sku", "date"])
    y = merged["units"].to_numpy(dtype=np.float64)
    yhat = merged["mean"].to_numpy(dtype=np.float64)
    stats = series_stats(history[is_hidden & (history["date"] <= cut)][["sku", "date", "units"]])
    codes, uniq = pd.factorize(merged["sku"])
    scale = stats["scale_sq"].reindex(uniq).to_numpy(dtype=np.float64)
    score = rmsse(y, yhat, scale_sq=scale, series=codes)
    return {
        "skus": int(n_hidden),
        "cutoff": cut.date().isoformat(),
        "wape": wape(y, yhat),
        "bias": bias(y, yhat),
        "rmsse": score.value,
        "rmsse_series": score.n_series,
    }
