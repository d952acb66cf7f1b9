"""A SKU's forecast explained: per-day contributions of feature groups, in units."""

from __future__ import annotations

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
    frame = history.sql(snap, [sku], model.required_history, horizon)
    days = explain(model, frame, products, pd.Timestamp(as_of), horizon)
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
