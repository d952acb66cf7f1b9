"""The engine a command runs on, chosen by name: ``local`` (this process) or ``dask``.

Both context managers give what the services take: a history runner for training (None: the
local default, read by ``training.pipeline``) and a forecast-all function for the batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

import pandas as pd
from sqlalchemy import Engine

from training.engine import ENGINES
from training.engine.runner import HistoryRunner
from training.errors import TrainingError
from training.predict import forecast_all

if TYPE_CHECKING:
    from training.bundle import Bundle


class ForecastAllFn(Protocol):
    """training.predict.forecast_all's signature: the whole catalogue's forecasts from a bundle."""

    def __call__(
        self,
        engine: Engine,
        bundle: Bundle,
        *,
        as_of: dt.date | None = None,
        horizon: int | None = None,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        skus: Sequence[str] | None = None,
    ) -> pd.DataFrame: ...


def check_engine(name: str) -> str:
    """A known engine name."""
    if name not in ENGINES:
        raise TrainingError(f"unknown engine {name!r}; choose {' or '.join(ENGINES)}")
    return name


@contextmanager
def history_runner(
    name: str,
    scheduler: str | None,
    engine: Engine,
    database_url: str,
    cutoff: dt.date | None = None,
) -> Iterator[HistoryRunner | None]:
    """None for ``local`` (training reads the history itself); for ``dask``, the history read
    by the cluster's workers, one SKU range each, released on leaving."""
    if check_engine(name) == "local":
        yield None
        return
    from training.engine.cluster import dask_client, scheduler_address, worker_url
    from training.engine.dask_runner import DaskRunner

    address = scheduler_address(scheduler)
    url = worker_url(database_url, address)
    with dask_client(address) as client:
        runner = DaskRunner.open(client, engine, url, cutoff)
        try:
            yield runner
        finally:
            runner.close()


@contextmanager
def batch_forecaster(
    name: str, scheduler: str | None, database_url: str
) -> Iterator[ForecastAllFn]:
    """training.predict.forecast_all, or its Dask form (same signature) for ``dask``."""
    if check_engine(name) == "local":
        yield forecast_all
        return
    from training.engine.cluster import dask_client, scheduler_address, worker_url
    from training.engine.dask_batch import DaskForecastAll

    address = scheduler_address(scheduler)
    url = worker_url(database_url, address)
    with dask_client(address) as client:
        yield DaskForecastAll(client, url)
