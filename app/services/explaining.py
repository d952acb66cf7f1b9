"""A SKU's forecast explained: per-day contributions of feature groups, in units."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from app.errors import InvalidRequest
from app.schemas import ExplainDay, ExplainResponse
from app.services.champion import Loaded
from app.services.history import HistorySource
from training.explain import explain
from training.explain import method as explanation_method


def explain_sku(loaded: Loaded, history: HistorySource, sku: str, horizon: int) -> ExplainResponse:
    """The contributions per day of the SKU's forecast (horizon already checked)."""
    model = loaded.forecaster.model
    if not model.gives_contributions:
        raise InvalidRequest(f"the champion ({model.model}) gives no contributions")
    snap, as_of, products = history.products(history.snapshot(), [sku])
    n_days = max(model.required_history, loaded.forecaster.history_days)
    frame = history.sql(snap, [sku], n_days, horizon)
    days = explain(model, frame, products, pd.Timestamp(as_of), horizon)
    weight = loaded.forecaster.model_weight(sku)
    if weight != 1.0:
        # The served forecast mixes in baselines (an ensemble, or this SKU's demand class falls
        # back to one): the model's terms count at their weight, the baselines' part joins the
        # baseline, so baseline + contributions is still the served forecast.
        served = loaded.forecaster.forecast(frame, products, pd.Timestamp(as_of), horizon, [0.5])
        by_date = dict(zip(pd.to_datetime(served["date"]).dt.date, served["mean"], strict=True))
        days = [
            replace(
                d,
                baseline=float(by_date[d.date] - weight * (d.forecast - d.baseline)),
                contributions={g: weight * v for g, v in d.contributions.items()},
                forecast=float(by_date[d.date]),
            )
            for d in days
        ]
    return ExplainResponse(
        sku=sku,
        model_version=loaded.version,
        data_until=as_of,
        method=explanation_method(model),
        days=[
            ExplainDay(
                date=d.date, baseline=d.baseline, contributions=d.contributions, forecast=d.forecast
            )
            for d in days
        ],
    )
