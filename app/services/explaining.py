"""A SKU's forecast explained: per-day contributions of feature groups (LightGBM champions)."""

from __future__ import annotations

import pandas as pd

from app.errors import InvalidRequest
from app.schemas import ExplainDay, ExplainResponse
from app.services.champion import Loaded
from app.services.history import HistorySource
from training.explain import explain
from training.forecaster import Forecaster


def explain_sku(loaded: Loaded, history: HistorySource, sku: str, horizon: int) -> ExplainResponse:
    """The contributions per day of the SKU's forecast (horizon already checked)."""
    model = loaded.forecaster.model
    if not _explains(model):
        raise InvalidRequest(f"the champion ({model.model}) gives no contributions")
    snap, as_of, products = history.products(history.snapshot(), [sku])
    frame = history.sql(snap, [sku], model.required_history, horizon)
    days = explain(model, frame, products, pd.Timestamp(as_of), horizon)
    return ExplainResponse(
        sku=sku,
        model_version=loaded.version,
        data_until=as_of,
        method=_explain_method(model),
        days=[
            ExplainDay(
                date=d.date, baseline=d.baseline, contributions=d.contributions, forecast=d.forecast
            )
            for d in days
        ],
    )


def _explains(model: Forecaster) -> bool:
    """Whether the champion's model gives per-feature contributions."""
    return model.model.startswith("lgbm")


def _explain_method(model: Forecaster) -> str:
    """How the contributions were made (the link decides how they are shared)."""
    link = (
        "log link: raw contributions shared in proportion"
        if model.model in ("lgbm_tweedie", "lgbm_poisson")
        else "identity link"
    )
    return f"LightGBM pred_contrib by feature group ({link})"
