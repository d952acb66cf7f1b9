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

# Training rows of the cold-start model at most (a uniform sample above): it reads a SKU's
# attributes, prices, promotions and calendar only, ~30 columns, and learns no more from the
# full model's 2M rows (M5 scale: docs/benchmarks.md, Scale out). Catalogues of up to ~450
# SKUs x 3 years train on every row.
COLD_START_MAX_ROWS = 500_000


def cold_start_forecaster(horizon: int, **model_params: Any) -> Forecaster:
    """An unfitted attribute-only forecaster (direct: its features need no history)."""
    return Forecaster(
        model="lgbm_tweedie",
        strategy="direct",
        horizon=horizon,
        drop_groups=(HISTORY_GROUP,),
        model_params={"n_estimators": 200, **model_params},
        min_rows_per_sku=0,
        max_train_rows=COLD_START_MAX_ROWS,
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
    known = history["units"].notna()
    last = pd.Timestamp(history.loc[known, "date"].max())
    cut = last - pd.Timedelta(days=horizon)
    hidden = hidden_skus(history.loc[known, "sku"].unique(), share, seed)
    del known
    if hidden is None:
        return {"skus": 0, "detail": "too few SKUs to hide some"}
    is_hidden = history["sku"].isin(hidden).to_numpy()
    seen = ~is_hidden & (history["date"] <= cut).to_numpy()
    model = cold_start_forecaster(horizon)
    model.fit(history, products, visible=seen)  # the seen rows read in place
    del seen
    merged, stats = cold_start_forecasts(model, history[is_hidden], products, cut, last)
    return cold_start_score(merged, stats, len(hidden), cut)


def hidden_skus(skus: np.ndarray, share: float, seed: int) -> set[str] | None:
    """The SKUs whose history a cold-start backtest hides (None: too few SKUs to hide some)."""
    skus = np.sort(np.asarray(skus, dtype=object))
    if len(skus) < 2:
        return None
    n_hidden = max(1, round(len(skus) * share))
    return set(np.random.default_rng(seed).choice(skus, size=n_hidden, replace=False))


def cold_start_forecasts(
    model: Forecaster,
    hidden: pd.DataFrame,
    products: pd.DataFrame,
    cut: pd.Timestamp,
    last: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The hidden SKUs' forecasts after ``cut`` beside their units, and their scales before it."""
    window = hidden[(hidden["date"] > cut) & (hidden["date"] <= last)]
    frame = window.assign(units=np.nan).reset_index(drop=True)
    pred = model.predict(frame, products, cut, model.horizon)
    merged = pred.merge(window[["sku", "date", "units"]], on=["sku", "date"])
    stats = series_stats(hidden[hidden["date"] <= cut][["sku", "date", "units"]])
    return merged, stats


def cold_start_score(
    merged: pd.DataFrame, stats: pd.DataFrame, n_hidden: int, cut: pd.Timestamp
) -> dict[str, Any]:
    """WAPE, bias and RMSSE of the hidden SKUs' forecasts (``cold_start_forecasts``)."""
    y = merged["units"].to_numpy(dtype=np.float64)
    yhat = merged["mean"].to_numpy(dtype=np.float64)
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
