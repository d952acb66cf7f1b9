"""Concurrent single-SKU forecasts that must be computed, coalesced into one prediction.

No timer: a request arriving while its worker computes nothing starts a batch at once; those
arriving while a batch computes go together into the next (per horizon and quantiles, up to
``max_batch`` SKUs), each with its own answer. A batch failing on one SKU is retried SKU by SKU,
so one request's error is never another's. Why and figures: docs/operations.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from app.errors import InsufficientHistory, SkuDiscontinued, UnknownSku
from app.observability import COALESCED
from app.services.encode import Answers
from app.services.forecasting import ForecastService

MAX_BATCH = 256
# After a batch of several, how long the next waits for the clients just answered to ask again.
GATHER_SECONDS = 0.002
RECENT_SECONDS = 0.05

# Errors about one SKU of a batch: its other SKUs are then computed one by one.
PER_SKU_ERRORS = (UnknownSku, SkuDiscontinued, InsufficientHistory)

GroupKey = tuple[int | None, tuple[float, ...] | None]


@dataclass
class _Waiting:
    sku: str
    future: asyncio.Future[bytes]


@dataclass
class Coalescer:
    """One per worker (event loop): queues computes and runs them in batches, one at a time."""

    service: ForecastService
    limiter: anyio.CapacityLimiter
    max_batch: int = MAX_BATCH
    gather_seconds: float = GATHER_SECONDS
    _queues: dict[GroupKey, list[_Waiting]] = field(default_factory=dict, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    # Clients likely to come back soon: those the last batch answered plus those still queued.
    _expect: int = field(default=1, init=False)
    _done_at: float = field(default=0.0, init=False)
    _arrived: asyncio.Event | None = field(default=None, init=False, repr=False)

    async def forecast_json(
        self, sku: str, horizon: int | None, quantiles: Sequence[float] | None
    ) -> bytes:
        """The ``ForecastResponse`` JSON for one SKU, computed in the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        key = (horizon, None if quantiles is None else tuple(float(q) for q in quantiles))
        self._queues.setdefault(key, []).append(_Waiting(sku, future))
        if self._arrived is not None and self._queued >= self._expect:
            self._arrived.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    @property
    def _queued(self) -> int:
        """Requests waiting for a batch (cancelled ones included until their batch)."""
        return sum(len(queue) for queue in self._queues.values())

    async def _drain(self) -> None:
        try:
            await self._drain_queues()
        finally:  # left with work only when cancelled (shutdown): release whoever still waits
            for queue in self._queues.values():
                for w in queue:
                    w.future.cancel()
            self._queues.clear()

    async def _gather(self) -> None:
        """Wait (at most ``gather_seconds``) for the clients the last batch answered to ask again.

        Without it, the first request back from a batch of n starts a batch of its own and the
        other n - 1 arrive while it computes: batches of 1 and n - 1 alternate, and every other
        compute pays a prediction's fixed cost for one SKU. Only right after a batch of several
        (a client answered less than ``RECENT_SECONDS`` ago); an idle worker never waits.
        """
        loop = asyncio.get_running_loop()
        if self._queued >= self._expect or loop.time() - self._done_at > RECENT_SECONDS:
            return
        self._arrived = asyncio.Event()
        try:
            await asyncio.wait_for(self._arrived.wait(), self.gather_seconds)
        except TimeoutError:
            pass
        finally:
            self._arrived = None

    async def _drain_queues(self) -> None:
        while self._queues:
            await self._gather()
            key = next(iter(self._queues))
            queue = self._queues.pop(key)
            if len(queue) > self.max_batch:
                # The rest go to the back, behind other groups already waiting.
                self._queues[key] = queue[self.max_batch :]
                queue = queue[: self.max_batch]
            waiting = [w for w in queue if not w.future.done()]  # a client may have left
            if waiting:
                await self._run(key, waiting)
                self._expect = len(waiting) + self._queued
                self._done_at = asyncio.get_running_loop().time()

    async def _run(self, key: GroupKey, waiting: list[_Waiting]) -> None:
        horizon, levels = key
        skus = list(dict.fromkeys(w.sku for w in waiting))
        COALESCED.observe(len(skus))
        try:
            answers = await self._answers(skus, horizon, levels)
        except asyncio.CancelledError:  # the loop is shutting down: nobody will answer them
            for w in waiting:
                w.future.cancel()
            raise
        except Exception as exc:
            if len(skus) == 1 or not isinstance(exc, PER_SKU_ERRORS):
                _fail(waiting, exc)  # the database, the model: the same answer for every one
                return
            for sku in skus:  # one SKU's error must not be the others'
                mine = [w for w in waiting if w.sku == sku]
                try:
                    alone = await self._answers([sku], horizon, levels)
                except Exception as error:
                    _fail(mine, error)
                else:
                    _answer(mine, alone)
            return
        _answer(waiting, answers)

    async def _answers(
        self, skus: list[str], horizon: int | None, levels: tuple[float, ...] | None
    ) -> Answers:
        return await anyio.to_thread.run_sync(
            self.service.answers, skus, horizon, levels, limiter=self.limiter
        )


def _answer(waiting: list[_Waiting], answers: Answers) -> None:
    for w in waiting:
        if not w.future.done():
            w.future.set_result(answers.json([w.sku]))


def _fail(waiting: list[_Waiting], exc: Exception) -> None:
    for w in waiting:
        if not w.future.done():
            w.future.set_exception(exc)
