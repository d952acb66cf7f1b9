"""Concurrent single-SKU forecasts (and inventory decisions) that must be computed, coalesced
into one prediction.

No timer: a request arriving while its worker computes nothing starts a batch at once; those
arriving while a batch computes go together into the next (per horizon and quantiles, up to
``max_batch`` SKUs), each with its own answer. A batch failing on one SKU is retried SKU by SKU,
so one request's error is never another's. Why and figures: docs/operations.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar, cast

import anyio

from app.errors import (
    HorizonOutOfRange,
    InsufficientHistory,
    InvalidRequest,
    SkuDiscontinued,
    UnknownSku,
)
from app.observability import COALESCED
from app.schemas import InventoryItem
from app.services.encode import Answers
from app.services.forecasting import ForecastService
from app.services.inventory import InventoryService, with_stock

MAX_BATCH = 256
# After a batch of several, how long the next waits for the clients just answered to ask again.
GATHER_SECONDS = 0.002
RECENT_SECONDS = 0.05

# Errors about one SKU of a forecast batch.
PER_SKU_ERRORS = (UnknownSku, SkuDiscontinued, InsufficientHistory)

GroupKey = tuple[int | None, tuple[float, ...] | None]  # horizon, quantiles
ServiceT = TypeVar("ServiceT")
ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


@dataclass
class _Waiting(Generic[ItemT]):
    sku: str
    item: ItemT
    future: asyncio.Future[Any]


@dataclass
class Batcher(Generic[ServiceT, ItemT, ResultT]):
    """One per worker (event loop) and kind of request: queues single-SKU computes and runs
    them in batches, one at a time. ``compute`` makes a batch's result (in a thread, under the
    worker's compute limiter), ``answer`` takes one request's answer out of it."""

    service: ServiceT
    limiter: anyio.CapacityLimiter
    max_batch: int = MAX_BATCH
    gather_seconds: float = GATHER_SECONDS
    _queues: dict[Hashable, list[_Waiting[ItemT]]] = field(default_factory=dict, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    # Clients likely to come back soon: those the last batch answered plus those still queued.
    _expect: int = field(default=1, init=False)
    _done_at: float = field(default=0.0, init=False)
    _arrived: asyncio.Event | None = field(default=None, init=False, repr=False)

    # Errors about one SKU of a batch: its other SKUs are then computed one by one.
    per_sku_errors: ClassVar[tuple[type[Exception], ...]] = PER_SKU_ERRORS

    def compute(self, key: Hashable, items: list[ItemT]) -> ResultT:
        raise NotImplementedError

    def answer(self, result: ResultT, waiting: _Waiting[ItemT]) -> Any:
        raise NotImplementedError

    async def submit(self, key: Hashable, sku: str, item: ItemT) -> Any:
        """This request's answer, computed in the next batch of its group ``key``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queues.setdefault(key, []).append(_Waiting(sku, item, future))
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

    async def _run(self, key: Hashable, waiting: list[_Waiting[ItemT]]) -> None:
        skus = list(dict.fromkeys(w.sku for w in waiting))
        COALESCED.observe(len(skus))
        try:
            result = await self._compute(key, _first_per_sku(waiting))
        except asyncio.CancelledError:  # the loop is shutting down: nobody will answer them
            for w in waiting:
                w.future.cancel()
            raise
        except Exception as exc:
            if len(skus) == 1 or not isinstance(exc, self.per_sku_errors):
                _fail(waiting, exc)  # the database, the model: the same answer for every one
                return
            for sku in skus:  # one SKU's error must not be the others'
                mine = [w for w in waiting if w.sku == sku]
                try:
                    alone = await self._compute(key, [mine[0].item])
                except Exception as error:
                    _fail(mine, error)
                else:
                    self._answer(mine, alone)
            return
        self._answer(waiting, result)

    async def _compute(self, key: Hashable, items: list[ItemT]) -> ResultT:
        return await anyio.to_thread.run_sync(self.compute, key, items, limiter=self.limiter)

    def _answer(self, waiting: list[_Waiting[ItemT]], result: ResultT) -> None:
        for w in waiting:
            if not w.future.done():
                w.future.set_result(self.answer(result, w))


class Coalescer(Batcher[ForecastService, str, Answers]):
    """Single-SKU forecasts (``GET /v1/forecast/{sku}``), grouped by horizon and quantiles."""

    async def forecast_json(
        self, sku: str, horizon: int | None, quantiles: Sequence[float] | None
    ) -> bytes:
        """The ``ForecastResponse`` JSON for one SKU, computed in the next batch."""
        key = (horizon, None if quantiles is None else tuple(float(q) for q in quantiles))
        body: bytes = await self.submit(key, sku, sku)
        return body

    def compute(self, key: Hashable, items: list[str]) -> Answers:
        horizon, levels = cast(GroupKey, key)
        return self.service.answers(items, horizon, levels)

    def answer(self, result: Answers, waiting: _Waiting[str]) -> bytes:
        return result.json([waiting.sku])


class InventoryCoalescer(Batcher[InventoryService, InventoryItem, dict[str, Any]]):
    """Single-SKU decisions (``GET /v1/inventory/{sku}``), grouped by lead time, review period
    and service level: one forecast and one draw of lead-time paths for the batch, each
    request's stock applied to its own decision."""

    per_sku_errors = (*PER_SKU_ERRORS, InvalidRequest, HorizonOutOfRange)

    async def decide(self, item: InventoryItem) -> dict[str, Any]:
        """The ``InventoryDecision`` data for one item, computed in the next batch."""
        key = (item.lead_time_days, item.review_days, item.service_level)
        decision: dict[str, Any] = await self.submit(key, item.sku, item)
        return decision

    def compute(self, key: Hashable, items: list[InventoryItem]) -> dict[str, Any]:
        return self.service.decide(items)

    def answer(self, result: dict[str, Any], waiting: _Waiting[InventoryItem]) -> dict[str, Any]:
        mine = next(d for d in result["items"] if d["sku"] == waiting.sku)
        return with_stock(mine, waiting.item.on_hand, waiting.item.on_order)


def _first_per_sku(waiting: list[_Waiting[ItemT]]) -> list[ItemT]:
    """Each SKU's first item, in order: a batch computes a SKU once."""
    firsts: dict[str, ItemT] = {}
    for w in waiting:
        firsts.setdefault(w.sku, w.item)
    return list(firsts.values())


def _fail(waiting: list[_Waiting[Any]], exc: Exception) -> None:
    for w in waiting:
        if not w.future.done():
            w.future.set_exception(exc)
