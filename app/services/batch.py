"""The nightly batch: forecast the whole catalogue from the champion and store it as one run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine

from app.errors import AsOfAfterData, InvalidRequest
from featurestore.forecast_runs import save_run
from featurestore.readers import last_sales_date
from featurestore.stats import data_token
from training.engine.select import ForecastAllFn
from training.predict import forecast_all, quantile_column
from training.registry import Registry


@dataclass
class BatchResult:
    """A forecast-all result and, when stored, its run id."""

    frame: pd.DataFrame
    model_version: str
    as_of: dt.date
    run_id: str | None


def run_forecast_all(
    engine: Engine,
    registry: Registry,
    *,
    as_of: dt.date | None = None,
    horizon: int | None = None,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    store: bool = True,
    forecast: ForecastAllFn = forecast_all,
) -> BatchResult:
    """Forecast every active SKU; store the run (visible once complete) unless told not to.

    An as-of after the last sales day is refused: the days between would be forecast from no
    data at all, and such a run would otherwise be served as if it were today's. ``forecast`` is
    forecast_all or its Dask form (training.engine.select.batch_forecaster).
    """
    read_at = dt.datetime.now(dt.UTC)  # before the data is read: pushes after it are newer
    token = data_token(engine)
    last = last_sales_date(engine)
    if last is None:
        raise InvalidRequest("the feature store holds no sales yet: nothing to forecast from")
    if as_of is not None and as_of > last:
        raise AsOfAfterData(
            f"as-of {as_of} is after the last sales day in the store ({last}): "
            "forecast from a day that has data"
        )
    bundle = registry.load_champion()
    origin = as_of or last
    frame = forecast(engine, bundle, as_of=origin, horizon=horizon, quantiles=quantiles)
    run_id = None
    if store:
        run_id = save_run(
            engine,
            frame,
            model_version=bundle.version,
            as_of=origin,
            data_token=token,
            horizon=int(horizon or bundle.artifacts["model"].horizon),
            quantiles=list(quantiles),
            quantile_columns=[quantile_column(q) for q in quantiles],
            read_at=read_at,
        )
    return BatchResult(frame, bundle.version, origin, run_id)
