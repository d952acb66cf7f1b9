"""Pushed batches stored in a process of their own.

A service worker answers forecasts and stores pushed order lines (``POST /v1/orders``) side by
side. A push is mostly Python: validation's pandas calls, building the statements, the driver.
In the worker's own process that Python holds the interpreter lock the forecasts computed
beside it need, and a forecast caught behind a group of pushes waits for it (docs/benchmarks.md,
pushed orders). ``Pusher`` runs ``push_batches`` in one child process per worker instead: the
worker only hands the batches over and waits for their outcomes, each exactly what
``push_batches`` gives in the worker (the same function, on an engine for the same database,
with the same ``SALESFC_`` settings).

A child that dies mid-push (killed, out of memory) leaves nothing of its transaction: the
database rolls it back when the connection drops. Its batches fail with ``PushProcessLost``
and the next push starts a new child. A child whose worker dies ends with it. An in-memory
SQLite database (one connection's, in the worker) and ``SALESFC_PUSH_PROCESS=false`` keep the
pushes in the worker.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import pickle
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sqlalchemy import Engine

from featurestore.config import get_settings
from featurestore.db import make_engine
from featurestore.ingest.lines import Batch, Outcome, push_batches

ENV_PREFIX = "SALESFC_"
# The push process's niceness: when the CPU is short, the forecasts answered by the worker go
# first and the pushes take what is left (docs/benchmarks.md, pushed orders).
NICE = 3
# Engines a child keeps open (one per database it was asked to push to; tests use many).
_CHILD_ENGINES = 4


class PushProcessLost(Exception):
    """The push process ended before answering: nothing of the batches was stored."""


def _settings_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}


# -- in the child --------------------------------------------------------------------------------

_engines: dict[str, Engine] = {}


def _child_engine(url: str) -> Engine:
    engine = _engines.pop(url, None)
    if engine is None:
        engine = make_engine(url, service=True)
        while len(_engines) >= _CHILD_ENGINES:
            _engines.pop(next(iter(_engines))).dispose()
    _engines[url] = engine  # most recently used last
    return engine


def _sendable(outcome: Outcome) -> Outcome:
    """The outcome itself when it survives pickling (every report and ingestion error does),
    else an error of the same family saying what it was."""
    if not isinstance(outcome, Exception):
        return outcome
    try:
        pickle.loads(pickle.dumps(outcome))
    except Exception:
        return RuntimeError(f"{type(outcome).__name__}: {outcome}")
    return outcome


def _push_in_child(
    url: str, env: dict[str, str], entity: str, batches: Sequence[Batch]
) -> list[Outcome]:
    """``push_batches`` with the worker's settings, on this process's engine for ``url``."""
    if env != _settings_env():
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(env)
        get_settings.cache_clear()
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
    try:
        outcomes = push_batches(_child_engine(url), entity, batches)
    except Exception as exc:  # what push_batches does not sort out itself fails every batch
        outcomes = [exc] * len(batches)
    return [_sendable(o) for o in outcomes]


def _start_child(nice: int) -> None:
    os.nice(nice)
    # A worker killed outright (SIGKILL, out of memory) never tells its pool to stop: without
    # this watch its push process would wait for work for ever.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_end_with, args=(parent,), daemon=True).start()


def _end_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the worker has ended, however it ended
    os._exit(0)  # a transaction in flight is rolled back by the database


def _warm() -> int:
    return os.getpid()


# -- in the worker -------------------------------------------------------------------------------


class Pusher:
    """``push_batches`` through this process's push process (started at the first push)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        atexit.register(self.close)

    @staticmethod
    def in_child(engine: Engine) -> bool:
        """Whether pushes to this engine's database go to the push process."""
        database = engine.url.database or ""
        in_memory = engine.url.get_backend_name() == "sqlite" and database in ("", ":memory:")
        return get_settings().push_process and not in_memory

    def __call__(self, engine: Engine, entity: str, batches: Sequence[Batch]) -> list[Outcome]:
        if not self.in_child(engine):
            return push_batches(engine, entity, batches)
        url = engine.url.render_as_string(hide_password=False)
        args = (url, _settings_env(), entity, list(batches))
        pool = self._started()
        try:
            future = pool.submit(_push_in_child, *args)
        except BrokenProcessPool:  # it died idle: nothing was sent, a new one takes the push
            self._drop(pool)
            pool = self._started()
            future = pool.submit(_push_in_child, *args)
        try:
            return future.result()
        except BrokenProcessPool as exc:
            self._drop(pool)
            lost = PushProcessLost("the push process ended before answering; nothing was stored")
            lost.__cause__ = exc
            return [lost] * len(batches)

    def pid(self) -> int:
        """The push process's id (started if it was not)."""
        return self._started().submit(_warm).result()

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: a fork of a worker running threads (the event loop's, the compute
                # slots') could inherit a lock held mid-operation.
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    max_workers=1, mp_context=context, initializer=_start_child, initargs=(NICE,)
                )
            return self._pool

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """End the push process (at exit; the next push would start another)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
