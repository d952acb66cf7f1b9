"""Every API edge answers a clear 4xx in the usual {error, detail} shape (issue #11, item 7)."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DataError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.errors import database_unreachable
from app.limits import MAX_BODY_BYTES
from app.main import create_app
from app.schemas import MAX_CHANGES
from app.services.batch import run_forecast_all
from featurestore.readers import last_sales_date, read_products
from tests.app.conftest import READ_KEY, Served


def _skus(served: Served) -> list[str]:
    products = read_products(served.engine)
    return sorted(products.loc[products["status"] == "active", "sku"])


def _window(served: Served) -> tuple[dt.date, dt.date]:
    last = last_sales_date(served.engine)
    assert last is not None
    return last + dt.timedelta(days=1), last + dt.timedelta(days=14)


def _price(sku: str, start: dt.date, end: dt.date) -> dict[str, object]:
    return {"sku": sku, "start": str(start), "end": str(end), "price": 0.5}


def test_what_if_outside_the_window_is_422(client: TestClient, served: Served) -> None:
    sku = _skus(served)[0]
    first, last = _window(served)
    far = dt.date(2030, 1, 1)
    past = first - dt.timedelta(days=30)
    cases = [
        {"prices": [_price(sku, far, far + dt.timedelta(days=6))]},
        {"prices": [_price(sku, past, first - dt.timedelta(days=1))]},
        {"promotions": [{"sku": sku, "start": str(far), "end": str(far), "depth": 0.3}]},
    ]
    for scenario in cases:
        response = client.post("/v1/forecast", json={"skus": [sku], "scenario": scenario})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "invalid_request"
        assert f"forecast window {first}..{last}" in body["detail"]
        change = (scenario.get("prices") or scenario["promotions"])[0]
        assert f"{change['start']}..{change['end']}" in body["detail"]
    # overlapping the window: applied to the days inside it
    base = client.post("/v1/forecast", json={"skus": _skus(served)}).json()["forecasts"]
    top = max(base, key=lambda f: sum(d["mean"] for d in f["days"]))["sku"]
    rise = {**_price(top, past, first + dt.timedelta(days=6)), "price": 1000.0}
    ok = client.post("/v1/forecast", json={"skus": [top], "scenario": {"prices": [rise]}})
    assert ok.status_code == 200, ok.text
    days = ok.json()["forecasts"][0]["days"]
    assert sum(d["delta"] for d in days[:7]) < 0


def test_scenario_lists_are_bounded(client: TestClient, served: Served) -> None:
    sku = _skus(served)[0]
    first, _ = _window(served)
    prices = [_price(sku, first, first)] * (MAX_CHANGES + 1)
    response = client.post("/v1/forecast", json={"skus": [sku], "scenario": {"prices": prices}})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"][0]["type"] == "too_long"


def test_large_bodies_are_413_before_parsing(client: TestClient, served: Served) -> None:
    sku = _skus(served)[0]
    first, _ = _window(served)
    entry = b'{"sku": "%s", "start": "%s", "end": "%s", "price": 0.5},' % (
        sku.encode(),
        str(first).encode(),
        str(first).encode(),
    )
    n = MAX_BODY_BYTES // len(entry) + 1
    body = b'{"skus": ["%s"], "scenario": {"prices": [' % sku.encode() + entry * n + b"{}]}}"
    headers = {"Content-Type": "application/json"}
    response = client.post("/v1/forecast", content=body, headers=headers)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: read up to the limit, then refused
        for i in range(0, len(body), 1 << 16):
            yield body[i : i + (1 << 16)]

    streamed = client.post("/v1/forecast", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "payload_too_large"
    # a body within the limit sent in chunks still answers
    small = b'{"skus": ["%s"], "horizon": 3}' % sku.encode()
    assert client.post("/v1/forecast", content=iter([small]), headers=headers).status_code == 200


def test_garbage_export_cursors_are_422(client: TestClient, served: Served) -> None:
    run_forecast_all(served.engine, served.registry, horizon=14)
    first = client.get("/v1/forecasts", params={"limit": 3})
    cursor = first.headers["X-Next-Cursor"]
    assert client.get("/v1/forecasts", params={"limit": 3, "cursor": cursor}).status_code == 200
    offset = base64.urlsafe_b64encode(b'{"offset": -1}').decode()
    for bad in ("../../", offset, "\x00", "a\x00b", "zzzz", ""):
        response = client.get("/v1/forecasts", params={"limit": 3, "cursor": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"] == "invalid_request"
    raw = client.get("/v1/forecasts?cursor=..%2F..%2F")
    assert raw.status_code == 422 and "X-Next-Cursor" not in raw.headers


def test_no_redirects_but_json_404s(client: TestClient, served: Served) -> None:
    sku = _skus(served)[0]
    for path in (
        "/v1/forecast/%2e%2e%2f",
        f"/v1/forecast/{sku}/",
        "/v1/models/",
        "/v1/forecast/",
    ):
        response = client.get(path, headers={"Host": "evil.example"}, follow_redirects=False)
        assert response.status_code == 404, (path, response.status_code)
        assert "location" not in response.headers
        assert response.json()["error"] == "not_found"


def test_nul_bytes_are_refused_before_the_database(client: TestClient, served: Served) -> None:
    for method, path, kwargs in (
        ("GET", "/v1/forecast/FOO%00BAR", {}),
        ("GET", "/v1/forecast/FOO%00BAR/explain", {}),
        ("GET", "/v1/jobs/%00", {}),
        ("GET", "/v1/forecasts?cursor=%00", {}),
        ("GET", "/v1/inventory/FOO%00BAR?lead_time_days=7", {}),
        ("POST", "/v1/inventory", {"json": {"items": [{"sku": "FOO\x00", "lead_time_days": 7}]}}),
        ("POST", "/v1/forecast", {"json": {"skus": ["FOO\x00"]}}),
        (
            "POST",
            "/v1/forecast",
            {
                "json": {
                    "skus": ["A"],
                    "scenario": {
                        "prices": [_price("A\x00", dt.date(2030, 1, 1), dt.date(2030, 1, 2))]
                    },
                }
            },
        ),
    ):
        response = client.request(method, path, **kwargs)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"] == "invalid_request"


def test_database_errors_split(
    client: TestClient,
    served: Served,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only connection failures are 503; any other database error is a logged 500."""
    from featurestore import forecast_runs

    def broken(engine, **_: object) -> None:  # type: ignore[no-untyped-def]
        with engine.connect() as conn:
            conn.execute(text("select * from no_such_table"))

    monkeypatch.setattr(forecast_runs, "latest_run", broken)
    with caplog.at_level(logging.INFO):
        response = client.get("/v1/forecasts", headers={"X-Request-Id": "req-4711"})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "database_error"
    assert "req-4711" in body["detail"] and "no_such_table" not in body["detail"]
    logged = [r.getMessage() for r in caplog.records if "database error" in r.getMessage()]
    assert logged and "req-4711" in logged[0] and "no_such_table" in logged[0]


class _PgError(Exception):
    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (OperationalError("connect", {}, _PgError("connection refused", None)), True),
        (OperationalError("q", {}, _PgError("terminating connection", "57P01")), True),
        (OperationalError("q", {}, _PgError("server closed", "08006")), True),
        (OperationalError("q", {}, _PgError("too many clients", "53300")), True),
        (OperationalError("q", {}, sqlite3.OperationalError("database is locked")), True),
        (OperationalError("q", {}, sqlite3.OperationalError("no such table: x")), False),
        (DataError("q", {}, _PgError("NUL bytes", "22021")), False),
        (ProgrammingError("q", {}, _PgError("syntax error", "42601")), False),
        (PoolTimeout("QueuePool limit reached"), True),
        (ValueError("not a database error"), False),
    ],
)
def test_which_database_errors_mean_unreachable(exc: Exception, unreachable: bool) -> None:
    assert database_unreachable(exc) is unreachable


def test_short_answers_say_what_and_why(client: TestClient, served: Served) -> None:
    """A SKU launching inside the window answers the days from its launch, and says so."""
    import pandas as pd

    from featurestore.ingest import ingest_frames

    first, _ = _window(served)
    launch = first + dt.timedelta(days=4)
    template = read_products(served.engine).iloc[0]
    product = {
        "sku": "NEW_LAUNCH_1",
        "item_id": "NEW_LAUNCH",
        "department": template["department"],
        "category": template["category"],
        "store": template["store"],
        "region": template["region"],
        "launch_date": launch,
        "status": "active",
    }
    ingest_frames(served.engine, "products", [pd.DataFrame([product])], source="test-launch")
    service = client.app.state.forecasts  # type: ignore[attr-defined]
    service.snapshot(force=True)
    expected = f"10 of 14 days: launches {launch}, nothing is forecast before it"
    computed = client.get("/v1/forecast/NEW_LAUNCH_1").json()
    assert computed["horizon"] == 14
    one = computed["forecasts"][0]
    assert one["cold_start"] is True and len(one["days"]) == 10
    assert one["days"][0]["date"] == str(launch)
    assert one["note"] == expected
    # the stored run answers the same
    run_forecast_all(served.engine, served.registry, horizon=14)
    service.cache.entries.clear()
    stored = client.post("/v1/forecast", json={"skus": ["NEW_LAUNCH_1", _skus(served)[0]]})
    notes = [f["note"] for f in stored.json()["forecasts"]]
    assert notes == [expected, None]


def test_ops_keys_alone_leave_reads_open(served: Served) -> None:
    settings = served.settings.model_copy(update={"read_api_keys": []})
    sku = _skus(served)[0]
    with TestClient(create_app(settings)) as c:
        assert c.get(f"/v1/forecast/{sku}").status_code == 200
        assert c.get("/v1/models").status_code == 200
        assert c.post("/v1/models/rollback").status_code == 401
        assert c.post("/v1/models/rollback", headers={"X-API-Key": READ_KEY}).status_code == 403


def test_error_details_never_show_server_paths(client: TestClient, served: Served) -> None:
    folder = str(served.settings.models_dir)
    response = client.get("/v1/models/20990101T000000Z-abcd")
    assert response.status_code == 404
    assert folder not in response.text and "<models_dir>" in response.json()["detail"]


def test_scrubbed_details_keep_the_word_data_and_hide_the_folders(tmp_path: Path) -> None:
    """A relative data_dir ("data") is hidden where it starts a path, not as a word."""
    from types import SimpleNamespace

    from app.errors import scrub_paths

    settings = SimpleNamespace(models_dir=tmp_path / "models", data_dir=Path("data"))
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))
    scrub = lambda detail: scrub_paths(detail, request)  # noqa: E731
    assert scrub("this API key may not push data") == "this API key may not push data"
    assert scrub("see data/rejects/orders.csv") == "see <data_dir>/rejects/orders.csv"
    assert scrub("see metadata/x") == "see metadata/x"
    absolute = str(Path("data").resolve() / "rejects")
    assert scrub(f"wrote {absolute}") == "wrote <data_dir>/rejects"
    assert scrub(f"bundle {tmp_path / 'models' / 'v1'} is broken") == (
        "bundle <models_dir>/v1 is broken"
    )
