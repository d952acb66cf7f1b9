"""A Dask client for the ``dask`` engine: an existing scheduler's, or a LocalCluster's.

``--scheduler local`` (or ``SALESFC_DASK_SCHEDULER=local``) starts a LocalCluster of worker
processes sized to this machine; any other value is a scheduler address (``tcp://host:8786``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from featurestore.config import get_settings
from training.errors import TrainingError
from training.estimators.base import cpu_threads

if TYPE_CHECKING:
    from distributed import Client

LOCAL = "local"


def local_shape(cpus: int | None = None) -> tuple[int, int]:
    """(worker processes, threads each) of a LocalCluster on ``cpus`` CPUs (default: this one's).

    One thread per worker up to 2 CPUs; above that 2 threads each (LightGBM's threads inside a
    worker share its memory; processes share nothing).
    """
    total = cpu_threads(cpus)
    if total <= 2:
        return total, 1
    return total // 2, 2


def scheduler_address(given: str | None) -> str:
    """The scheduler to use: the given address, else SALESFC_DASK_SCHEDULER; refused if none."""
    address = given or get_settings().dask_scheduler
    if not address:
        raise TrainingError(
            "the dask engine needs a scheduler: --scheduler tcp://host:8786 (or the "
            "SALESFC_DASK_SCHEDULER setting), or --scheduler local for a LocalCluster here"
        )
    return address


def worker_url(database_url: str, address: str) -> str:
    """The store's URL as workers must use it: SQLite files absolute, and only on this machine."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return database_url
    if address != LOCAL:
        raise TrainingError(
            "a SQLite feature store is a file on this machine: use --scheduler local, or point "
            "SALESFC_DATABASE_URL at PostgreSQL for a cluster of several machines"
        )
    if not url.database or url.database == ":memory:":
        raise TrainingError("an in-memory SQLite store cannot be shared with worker processes")
    return url.set(database=str(Path(url.database).resolve())).render_as_string(hide_password=False)


@contextmanager
def dask_client(address: str | None = None, *, workers: int | None = None) -> Iterator[Client]:
    """A connected client; for ``local``, a LocalCluster that is shut down on leaving."""
    from distributed import Client, LocalCluster

    where = scheduler_address(address)
    if where != LOCAL:
        try:
            client = Client(where, timeout=30)
        except OSError as exc:
            raise TrainingError(f"cannot reach the Dask scheduler at {where}: {exc}") from exc
        with client:
            yield client
        return
    n_workers, threads = local_shape()
    if workers is not None:
        n_workers, threads = workers, max(1, cpu_threads(None) // workers)
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
