"""The database goes away under a running service and comes back: 503 meanwhile, then recovery.

PostgreSQL only (an embedded SQLite file cannot go down). The service talks to the database
through a TCP relay owned by the test; stopping the relay cuts every open connection and refuses
new ones, as a database restart or a network partition does. The same app object must answer
503 (never 500) while the relay is down and 200 again once it is back, without a restart.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.main import create_app
from app.services.history import TOKEN_TTL
from featurestore.readers import read_products
from tests.app.conftest import READ_KEY, Served
from training.registry import Registry


class Relay:
    """A TCP relay to host:port that can be stopped (cutting its connections) and restarted."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(32)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not, and the
            # kernel would go on accepting connections for it.
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relayed(pg_served: Served) -> Iterator[tuple[Relay, str]]:
    url = make_url(pg_served.settings.database_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    relay.start()
    try:
        yield (
            relay,
            url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False),
        )
    finally:
        relay.stop()


def test_database_outage_is_503_then_recovers(
    pg_served: Served, relayed: tuple[Relay, str]
) -> None:
    relay, url = relayed
    settings = pg_served.settings.model_copy(update={"database_url": url, "forecast_cache": False})
    products = read_products(pg_served.engine)
    active = products.loc[products["status"] == "active", "sku"].astype(str).tolist()
    sku, others = active[0], active[1:4]
    assert Registry(pg_served.settings.models_dir).champion() == pg_served.version
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["X-API-Key"] = READ_KEY
        assert client.get("/readyz").status_code == 200
        assert client.get(f"/v1/forecast/{sku}").status_code == 200

        relay.stop()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"] is False
        # Within the token's TTL a worker trusts its data token, so it may still answer from
        # memory (forecasts it computed, its catalogue window); once the token is due, anything
        # that must read gets a 503 (pooled connections are dead, new ones are refused).
        time.sleep(TOKEN_TTL + 0.05)
        for other in others:
            down = client.get(f"/v1/forecast/{other}")
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "database_unavailable"

        relay.start()
        assert client.get("/readyz").status_code == 200
        for again in [sku, *others]:
            back = client.get(f"/v1/forecast/{again}")
            assert back.status_code == 200, back.text
            assert back.json()["forecasts"][0]["sku"] == again
