"""Concurrent single-SKU computes coalesced into one prediction: same answers, own errors."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from app.errors import SkuDiscontinued, UnknownSku
from app.main import create_app
from app.schemas import InventoryItem
from app.services.champion import ChampionHolder
from app.services.coalesce import Coalescer, InventoryCoalescer
from app.services.forecasting import ForecastService
from app.services.inventory import InventoryService
from featurestore.readers import read_products
from tests.app.conftest import READ_KEY, Served


class _Spy(ForecastService):
    """A ForecastService that records the SKU lists it was asked to compute together."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[list[str]] = []

    def answers(self, skus: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(list(skus))
        return super().answers(skus, *args, **kwargs)


def _service(served: Served) -> _Spy:
    holder = ChampionHolder(served.registry)
    return _Spy(served.engine, holder, [0.1, 0.5, 0.9], use_cache=False)


def test_concurrent_requests_share_one_prediction_and_keep_their_answers(
    served: Served,
) -> None:
    products = read_products(served.engine)
    active = sorted(products.loc[products["status"] == "active", "sku"])[:6]
    gone = products.loc[products["status"] == "discontinued", "sku"].iloc[0]
    service = _service(served)
    alone = {s: service.forecast_json([s], 7, [0.1, 0.9]) for s in active}
    service.calls.clear()

    async def run() -> list[Any]:
        coalescer = Coalescer(service, anyio.CapacityLimiter(1))
        asked = [*active, "NO_SUCH_SKU", gone, active[0]]
        return await asyncio.gather(
            *(coalescer.forecast_json(s, 7, [0.1, 0.9]) for s in asked), return_exceptions=True
        )

    results = asyncio.run(run())
    # One prediction for all of them; it failed (unknown and discontinued SKUs), so each SKU
    # was then computed alone and every request got its own answer or its own error.
    assert service.calls[0] == [*active, "NO_SUCH_SKU", gone]
    assert sorted(map(tuple, service.calls[1:])) == sorted((s,) for s in service.calls[0])
    for sku, got in zip(active, results, strict=False):
        assert got == alone[sku]
    assert results[-1] == alone[active[0]]
    assert isinstance(results[len(active)], UnknownSku)
    assert isinstance(results[len(active) + 1], SkuDiscontinued)


def test_a_batch_without_errors_is_one_prediction(served: Served) -> None:
    products = read_products(served.engine)
    active = sorted(products.loc[products["status"] == "active", "sku"])[:8]
    service = _service(served)
    alone = {s: service.forecast_json([s]) for s in active}
    service.calls.clear()

    async def run() -> list[bytes]:
        coalescer = Coalescer(service, anyio.CapacityLimiter(1), max_batch=5)
        return await asyncio.gather(*(coalescer.forecast_json(s, None, None) for s in active))

    results = asyncio.run(run())
    assert results == [alone[s] for s in active]
    assert service.calls == [active[:5], active[5:]]  # max_batch caps a prediction


@pytest.mark.parametrize("cache", [False, True])
def test_concurrent_gets_over_the_api(served: Served, cache: bool) -> None:
    """Threads hitting the route at once all get the answer of a request made alone."""
    products = read_products(served.engine)
    active = sorted(products.loc[products["status"] == "active", "sku"])[:8]
    settings = served.settings.model_copy(update={"forecast_cache": cache})
    with TestClient(create_app(settings)) as client:
        client.headers["X-API-Key"] = READ_KEY
        alone = {s: client.get(f"/v1/forecast/{s}", params={"horizon": 5}).json() for s in active}
        got: dict[str, list[Any]] = {s: [] for s in active}
        statuses: list[int] = []

        def hammer(sku: str) -> None:
            for _ in range(5):
                r = client.get(f"/v1/forecast/{sku}", params={"horizon": 5})
                statuses.append(r.status_code)
                got[sku].append(r.json())

        threads = [threading.Thread(target=hammer, args=(s,)) for s in active]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        missing = client.get("/v1/forecast/NO_SUCH_SKU")
    assert statuses == [200] * 40
    for sku in active:
        assert got[sku] == [alone[sku]] * 5
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_sku"


def test_clients_answered_together_are_waited_for_together(served: Served) -> None:
    """Clients that were answered by one batch and ask again a few ms apart (network jitter)
    are gathered into one batch instead of a batch of the first and one of the rest."""
    products = read_products(served.engine)
    active = sorted(products.loc[products["status"] == "active", "sku"])[:4]
    service = _service(served)
    service.forecast_json(active[:1])  # the store's snapshot and window, read once
    service.calls.clear()

    async def run() -> None:
        coalescer = Coalescer(service, anyio.CapacityLimiter(1), gather_seconds=0.2)

        async def client(i: int) -> None:
            for _ in range(3):
                await coalescer.forecast_json(active[i], None, None)
                await asyncio.sleep(0.003 * i)

        await asyncio.gather(*(client(i) for i in range(4)))

    asyncio.run(run())
    assert [sorted(c) for c in service.calls] == [active] * 3


def test_an_idle_worker_does_not_wait(served: Served) -> None:
    products = read_products(served.engine)
    sku = sorted(products.loc[products["status"] == "active", "sku"])[0]
    service = _service(served)

    async def run() -> float:
        coalescer = Coalescer(service, anyio.CapacityLimiter(1), gather_seconds=5.0)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(3):  # one client, one request at a time: never gathered
            await coalescer.forecast_json(sku, None, None)
        return loop.time() - start

    assert asyncio.run(run()) < 5.0
    assert service.calls == [[sku]] * 3


def test_a_failure_of_the_whole_batch_is_every_requests_answer() -> None:
    """The database or the model failing is not retried SKU by SKU: one call, one error each."""
    from app.errors import ModelNotReady

    calls: list[list[str]] = []

    class Down:
        def answers(self, skus: list[str], *args: Any) -> Any:
            calls.append(list(skus))
            raise ModelNotReady("no champion model is loaded yet")

    async def run() -> list[Any]:
        coalescer = Coalescer(Down(), anyio.CapacityLimiter(1))  # type: ignore[arg-type]
        asked = (coalescer.forecast_json(s, None, None) for s in ("A", "B", "C"))
        return await asyncio.gather(*asked, return_exceptions=True)

    results = asyncio.run(run())
    assert calls == [["A", "B", "C"]]
    assert all(isinstance(r, ModelNotReady) for r in results)


def test_start_up_objects_are_frozen_out_of_the_collector(served: Served) -> None:
    """A worker's lifespan freezes what it loaded: full collections no longer walk it."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(served.settings)):
        assert gc.get_freeze_count() > 100_000


class _InventorySpy(InventoryService):
    """An InventoryService that records the SKU lists it decided together."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[list[str]] = []

    def decide(self, items: Any) -> Any:
        self.calls.append([i.sku for i in items])
        return super().decide(items)


def test_concurrent_inventory_decisions_share_one_forecast_and_keep_their_stock(
    served: Served,
) -> None:
    products = read_products(served.engine)
    active = sorted(products.loc[products["status"] == "active", "sku"])[:4]
    service = _InventorySpy(_service(served))

    def item(sku: str, on_hand: float) -> InventoryItem:
        return InventoryItem(sku=sku, lead_time_days=5, review_days=3, on_hand=on_hand)

    asked = [item(s, float(i)) for i, s in enumerate(active)]
    asked += [item("NO_SUCH_SKU", 0.0), item(active[0], 1000.0)]
    alone = [service.decide([i])["items"][0] for i in asked if i.sku != "NO_SUCH_SKU"]
    service.calls.clear()

    async def run() -> list[Any]:
        coalescer = InventoryCoalescer(service, anyio.CapacityLimiter(1))
        return await asyncio.gather(*(coalescer.decide(i) for i in asked), return_exceptions=True)

    results = asyncio.run(run())
    # One batch (the unknown SKU failed it), then each SKU alone; every request its own stock.
    assert service.calls[0] == [*active, "NO_SUCH_SKU"]
    assert sorted(map(tuple, service.calls[1:])) == sorted((s,) for s in service.calls[0])
    assert isinstance(results[4], UnknownSku)
    got = [r for r in results if not isinstance(r, Exception)]
    assert got == alone
    assert got[-1]["suggested_order"] == 0.0 and got[-1]["on_hand"] == 1000.0
    assert got[0]["order_up_to"] == got[-1]["order_up_to"]
