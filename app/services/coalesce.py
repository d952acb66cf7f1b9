"""Concurrent single-SKU forecasts that must be computed, coalesced into one prediction.

Storefront traffic is many single-SKU ``GET /v1/forecast/{sku}`` at once. Computed one by one,
each pays the fixed cost of a prediction (window slice, feature assembly, each stage's booster
set-up, calibration: ~2.5 ms) and, one compute at a time per worker, waits behind the others:
at 8 connections the last of 8 waits for 8 computes. Computed together, 8 SKUs cost ~5 ms
(~0.6 ms a SKU): one vectorised prediction over 8 x 28 rows.

There is no timer and so no added latency: a request that arrives while its worker computes
nothing starts a batch of its own at once; requests that arrive while a batch computes wait for
it (as they would have waited for the compute slot anyway) and then go together in the next one,
up to ``max_batch`` SKUs. This is the dynamic batching of inference servers (Triton, TorchServe)
without their delay window. Requests are grouped by horizon and quantiles; each still gets its
own answer (the same bytes as computed alone, see tests) with the model version and data date of
the batch. If a batch fails (an unknown SKU, a discontinued one), each of its SKUs is computed
alone so that one request's error is never another's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from app.observability import COALESCED
from app.services.forecasting import Answers, ForecastService

MAX_BATCH = 256

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
    _queues: dict[GroupKey, list[_Waiting]] = field(default_factory=dict, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def forecast_json(
        self, sku: str, horizon: int | None, quantiles: Sequence[float] | None
    ) -> bytes:
        """The ``ForecastResponse`` JSON for one SKU, computed in the next batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        key = (horizon, None if quantiles is None else tuple(float(q) for q in quantiles))
        self._queues.setdefault(key, []).append(_Waiting(sku, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await self._drain_queues()
        finally:  # left with work only when cancelled (shutdown): release whoever still waits
            for queue in self._queues.values():
                for w in queue:
                    w.future.cancel()
            self._queues.clear()

    async def _drain_queues(self) -> None:
        while self._queues:
            key = next(iter(self._queues))
            queue = self._queues.pop(key)
            if len(queue) > self.max_batch:
                # The rest go to the back, behind other groups already waiting.
                self._queues[key] = queue[self.max_batch :]
                queue = queue[: self.max_batch]
            waiting = [w for w in queue if not w.future.done()]  # a client may have left
            if waiting:
                await self._run(key, waiting)

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
            if len(skus) == 1:
                _fail(waiting, exc)
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
