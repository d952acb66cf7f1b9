"""forecast-all on a Dask cluster: each worker forecasts its own SKU ranges from the store.

``DaskForecastAll`` has the signature of ``training.predict.forecast_all``, so the nightly batch
and the inventory plan (app.services) take either. The bundle is sent once to every worker; each
range's history is read by the worker forecasting it; the frames come back in SKU order and are
stored by the caller as one run, visible only once complete (featurestore.forecast_runs).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import Engine

from featurestore.readers import last_sales_date, sku_ranges
from training.engine import dask_tasks as tasks
from training.engine.dask_runner import SKUS_PER_PARTITION
from training.errors import TrainingError
from training.predict import forecast_all

if TYPE_CHECKING:
    from distributed import Client

    from training.bundle import Bundle


class DaskForecastAll:
    """training.predict.forecast_all mapped over the catalogue's SKU ranges on a cluster."""

    def __init__(self, client: Client, url: str, partitions: int | None = None) -> None:
        self.client = client
        self.url = url  # the store as the workers reach it (cluster.worker_url)
        self.partitions = partitions

    def __call__(
        self,
        engine: Engine,
        bundle: Bundle,
        *,
        as_of: dt.date | None = None,
        horizon: int | None = None,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        skus: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Forecast every active SKU (given SKUs: here, as forecast_all does)."""
        if skus is not None:
            return forecast_all(
                engine, bundle, as_of=as_of, horizon=horizon, quantiles=quantiles, skus=skus
            )
        last = as_of or last_sales_date(engine)
        if last is None:
            raise TrainingError("the feature store has no sales history: ingest data first")
        client = self.client
        workers = len(client.ncores())
        active = sku_ranges(engine, 1, active_only=True)
        if not active:
            raise TrainingError("no active SKUs to forecast")
        n = self.partitions or max(workers, math.ceil(active[0].skus / SKUS_PER_PARTITION))
        ranges = sku_ranges(engine, n, active_only=True)
        [shared] = client.scatter([bundle], broadcast=True, hash=False)
        try:
            frames = client.gather(
                [
                    client.submit(
                        tasks.forecast_range, self.url, r, shared, last, horizon, list(quantiles)
                    )
                    for r in ranges
                ]
            )
        finally:
            client.cancel([shared])
        return pd.concat([f for f in frames if not f.empty], ignore_index=True)
