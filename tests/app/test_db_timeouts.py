"""A database that stops answering (packets dropped, not refused): bounded answers, then recovery.

The proxy tests are PostgreSQL only: SQLite is a file in the process, with no network to lose.
The service talks to PostgreSQL through an asyncio TCP proxy owned by the test that can be told
to drop: it keeps every connection open and forwards nothing (bytes are read and thrown away, as
lost packets are), so no error ever reaches the client and only its own deadlines can end a wait.
Without them each request below waits for good; ``within`` fails the test instead of hanging.
The pool-checkout timeout is tested on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from app.main import create_app
from app.services.history import TOKEN_TTL
from featurestore.config import Settings
from featurestore.db import make_engine
from featurestore.readers import read_products
from tests.app.conftest import OPS_KEY, READ_KEY, Served

T = TypeVar("T")

# Short deadlines keep the test quick: a request during the outage may take a ping's deadline
# (db_connect_timeout_s) and a connect timeout, so about 4 s.
FAST = {
    "db_connect_timeout_s": 2,
    "db_statement_timeout_s": 1.0,
    "db_pool_timeout_s": 1.0,
    "readyz_timeout_s": 1.0,
}


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 to host:port that can stop forwarding (``drop``) and resume."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.forwarding = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(5)
        self.port: int = self._server.sockets[0].getsockname()[1]

    def drop(self) -> None:
        self.forwarding = False

    def resume(self) -> None:
        self.forwarding = True

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.forwarding:  # else lost, like a dropped packet
                    dst.write(data)
                    await dst.drain()
        finally:
            dst.close()
            self._writers.discard(dst)


def within(seconds: float, call: Callable[[], T]) -> tuple[T, float]:
    """``call()``'s result and how long it took; fails the test if it takes over ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"no answer within {seconds} s: the database's silence was waited out")
    if "error" in box:
        raise box["error"]
    return box["value"], time.monotonic() - started


@pytest.fixture
def proxied(pg_served: Served) -> Iterator[tuple[DroppingProxy, Settings]]:
    url = make_url(pg_served.settings.database_url)
    proxy = DroppingProxy(url.host or "127.0.0.1", url.port or 5432)
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = pg_served.settings.model_copy(
        update={"database_url": through, "forecast_cache": False, **FAST}
    )
    try:
        yield proxy, settings
    finally:
        proxy.close()


def active_skus(served: Served) -> list[str]:
    products = read_products(served.engine)
    return products.loc[products["status"] == "active", "sku"].astype(str).tolist()


def test_silent_database_is_503_in_bounded_time_then_recovers(
    pg_served: Served, proxied: tuple[DroppingProxy, Settings]
) -> None:
    proxy, settings = proxied
    skus = active_skus(pg_served)
    first, others = skus[0], skus[1:3]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = READ_KEY
        assert client.get("/readyz").status_code == 200
        assert client.get(f"/v1/forecast/{first}").status_code == 200

        proxy.drop()
        ready, took = within(5, lambda: client.get("/readyz"))
        assert ready.status_code == 503 and ready.json()["database"] is False
        assert took < settings.readyz_timeout_s + 0.5, took
        time.sleep(TOKEN_TTL + 0.05)  # past the data token's TTL, a forecast must read
        for sku in others:
            down, took = within(10, lambda sku=sku: client.get(f"/v1/forecast/{sku}"))
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "database_unavailable"
        batch, _ = within(10, lambda: client.post("/v1/forecast", json={"skus": others}))
        assert batch.status_code == 503, batch.text

        proxy.resume()
        # No restart and no waiting out stale connections: the first requests succeed.
        ready, took = within(5, lambda: client.get("/readyz"))
        assert ready.status_code == 200, (ready.text, took)
        for sku in [first, *others]:
            back, took = within(5, lambda sku=sku: client.get(f"/v1/forecast/{sku}"))
            assert back.status_code == 200, back.text
            assert took < 2, took


def test_statement_in_flight_is_given_up(
    pg_served: Served, proxied: tuple[DroppingProxy, Settings]
) -> None:
    proxy, settings = proxied
    engine = make_engine(settings.database_url, settings, service=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
            proxy.drop()
            with pytest.raises(OperationalError, match="did not answer"):
                within(10, lambda: conn.execute(text("select 1")))
        proxy.resume()
        with engine.connect() as conn:  # the pool dropped the dead connection by itself
            assert conn.execute(text("select 2")).scalar_one() == 2
    finally:
        engine.dispose()


def test_service_statements_are_cancelled_by_postgresql(pg_served: Served) -> None:
    """A statement over db_statement_timeout_s is cancelled by the server; the connection lives."""
    settings = pg_served.settings.model_copy(update=FAST)
    engine = make_engine(settings.database_url, settings, service=True)
    try:
        with engine.connect() as conn:
            with pytest.raises(OperationalError) as caught:
                within(10, lambda: conn.execute(text("select pg_sleep(5)")))
            assert isinstance(caught.value.orig, psycopg.errors.QueryCanceled)
            conn.rollback()
            assert conn.execute(text("select 3")).scalar_one() == 3
        # Batch engines (ingest, training) are not bounded per statement.
        batch = make_engine(settings.database_url, settings)
        with batch.connect() as conn:
            conn.execute(text("select pg_sleep(1.5)"))
        batch.dispose()
    finally:
        engine.dispose()


def test_busy_pool_is_503_within_the_pool_timeout(served: Served) -> None:
    """Every pooled connection taken: a request waits db_pool_timeout_s, then 503 (not 500)."""
    settings = served.settings.model_copy(update={"forecast_cache": False, **FAST})
    sku = active_skus(served)[0]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = READ_KEY
        assert client.get(f"/v1/forecast/{sku}").status_code == 200
        engine: Engine = client.app.state.engine  # type: ignore[attr-defined]
        size = engine.pool.size() + engine.pool._max_overflow  # type: ignore[attr-defined]
        with contextlib.ExitStack() as held:
            for _ in range(size):
                held.enter_context(engine.connect())
            time.sleep(TOKEN_TTL + 0.05)
            busy, took = within(10, lambda: client.get(f"/v1/forecast/{sku}"))
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"] == "database_unavailable"
            assert took < settings.db_pool_timeout_s + 1.5, took
            ready, _ = within(5, lambda: client.get("/readyz"))
            assert ready.status_code == 503
        assert client.get(f"/v1/forecast/{sku}").status_code == 200
        assert client.get("/readyz", headers={"X-API-Key": OPS_KEY}).status_code == 200
