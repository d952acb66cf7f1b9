"""POST /v1/orders: validated, idempotent pushes that move the next forecast of their SKUs only.

The store's last day comes from order lines (as a shop's would), so a pushed order on that day
changes its daily sales; every earlier day is a directly loaded total.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app.main import create_app
from app.services import orders
from app.services.batch import run_forecast_all
from app.services.forecasting import ForecastService
from app.services.history import TOKEN_TTL
from app.services.orders import push_orders
from featurestore.config import Settings
from featurestore.db import make_engine
from featurestore.ingest import ingest_frames
from featurestore.ingest import lines as lines_module
from featurestore.readers import last_sales_date
from tests.app.conftest import OPS_KEY, READ_KEY, small_options
from tests.app.test_db_recovery import Relay
from tests.conftest import own_store
from training.pipeline import train
from training.registry import Registry
from training.synth import SynthConfig, generate, write_catalogue

INGEST_KEY = "ingest-secret-key"


@dataclasses.dataclass
class Shop:
    settings: Settings
    engine: Engine
    skus: list[str]
    last: str  # the last sales day, ISO


def build_shop(url: str, models_dir: Path) -> Shop:
    engine = make_engine(url)
    cat = generate(SynthConfig(n_skus=6, n_days=240, seed=5))
    last_day = cat.sales["date"].max()
    final = cat.sales[cat.sales["date"] == last_day]
    write_catalogue(engine, dataclasses.replace(cat, sales=cat.sales[cat.sales["date"] < last_day]))
    day = pd.Timestamp(last_day).strftime("%Y-%m-%d")
    orders = pd.DataFrame(
        {
            "order_id": [f"H-{i}" for i in range(len(final))],
            "line": 1,
            "sku": final["sku"].to_numpy(),
            "ordered_at": f"{day}T12:00:00Z",
            "quantity": final["units"].to_numpy(dtype=float),
            "unit_price": 2.0,
        }
    )
    ingest_frames(engine, "orders", [orders], source="test:last-day")
    # A flat mean of the last 28 days: a day's units move every day of its forecast (the direct
    # LightGBM models see a day only 14 days on).
    outcome = train(engine, models_dir, small_options(models=["moving_average"]))
    Registry(models_dir).promote(outcome.version, reason="test")
    settings = Settings(
        database_url=url,
        models_dir=models_dir,
        read_api_keys=[READ_KEY],  # type: ignore[list-item]
        ops_api_keys=[OPS_KEY],  # type: ignore[list-item]
        ingest_api_keys=[INGEST_KEY],  # type: ignore[list-item]
    )
    active = cat.products.loc[cat.products["status"] == "active", "sku"].astype(str).tolist()
    return Shop(settings, engine, sorted(active), day)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("shop")
    with own_store(request, root) as url:
        built = build_shop(url, root / "models")
        yield built
        built.engine.dispose()


@pytest.fixture
def client(shop: Shop) -> Iterator[TestClient]:
    with TestClient(create_app(shop.settings)) as c:
        c.headers["X-API-Key"] = INGEST_KEY
        yield c


def _line(order: str, sku: str, day: str, quantity: float, line: int = 1) -> dict[str, object]:
    return {
        "order_id": order,
        "line": line,
        "sku": sku,
        "ordered_at": f"{day}T18:30:00Z",
        "quantity": quantity,
        "unit_price": 2.0,
        "status": "completed",
    }


def _units(engine: Engine, sku: str, day: str) -> float:
    with engine.connect() as conn:
        return float(
            conn.execute(
                text("SELECT units FROM daily_sales WHERE sku = :s AND date = :d"),
                {"s": sku, "d": day},
            ).scalar_one()
        )


def _means(client: TestClient, sku: str) -> list[float]:
    got = client.get(f"/v1/forecast/{sku}", headers={"X-API-Key": READ_KEY})
    assert got.status_code == 200, got.text
    return [d["mean"] for d in got.json()["forecasts"][0]["days"]]


def test_a_big_order_moves_its_sku_and_drops_only_its_cache(client: TestClient, shop: Shop) -> None:
    sku, other = shop.skus[0], shop.skus[1]
    before, other_before = _means(client, sku), _means(client, other)
    service: ForecastService = client.app.state.forecasts  # type: ignore[attr-defined]
    cached = {key[0] for key in service.cache.entries}
    assert {sku, other} <= cached
    # Another worker: its own service (and cache) on the same store, warmed on the same SKU.
    worker = ForecastService(service.engine, service.holder, shop.settings.quantiles)
    worker.history.token_ttl = 0.0
    assert worker.forecast([sku]).forecasts[0].days[0].mean == pytest.approx(before[0])

    units = _units(shop.engine, sku, shop.last)
    pushed = client.post("/v1/orders", json={"lines": [_line("BIG-1", sku, shop.last, 400.0)]})
    assert pushed.status_code == 200, pushed.text
    assert pushed.json() == {
        "received": 1,
        "inserted": 1,
        "unchanged": 0,
        "updated": 0,
        "rejected": [],
        "skus_changed": [sku],
    }
    assert _units(shop.engine, sku, shop.last) == units + 400.0
    # Within the request: only the pushed SKU's entries left this worker's cache.
    left = {key[0] for key in service.cache.entries}
    assert sku not in left and other in left
    after = _means(client, sku)
    assert all(a > b + 10 for a, b in zip(after, before, strict=True)), (before, after)
    assert _means(client, other) == other_before
    # The other worker learns of it at its next token check, and drops that SKU only.
    moved = worker.forecast([sku]).forecasts[0].days
    assert [d.mean for d in moved] == pytest.approx(after)

    # Put the day back as it was (a cancellation of the same line) for the other tests.
    undo = _line("BIG-1", sku, shop.last, 400.0) | {"status": "cancelled"}
    assert client.post("/v1/orders", json={"lines": [undo]}).json()["updated"] == 1
    assert _units(shop.engine, sku, shop.last) == units
    assert _means(client, sku) == pytest.approx(before)


def test_a_retried_batch_changes_nothing(client: TestClient, shop: Shop) -> None:
    lines = [_line("R-1", s, shop.last, 1.0, line=i + 1) for i, s in enumerate(shop.skus[:3])]
    first = client.post("/v1/orders", json={"lines": lines}).json()
    assert (first["inserted"], first["unchanged"], first["updated"]) == (3, 0, 0)
    assert first["skus_changed"] == sorted(shop.skus[:3])
    with shop.engine.connect() as conn:
        versions = conn.execute(text("SELECT sku, version FROM sku_data_versions")).all()
    again = client.post("/v1/orders", json={"lines": lines}).json()
    assert again == {
        "received": 3,
        "inserted": 0,
        "unchanged": 3,
        "updated": 0,
        "rejected": [],
        "skus_changed": [],
    }
    with shop.engine.connect() as conn:
        assert conn.execute(text("SELECT sku, version FROM sku_data_versions")).all() == versions
    # One line changed: updated like a file would, its SKU alone moves on.
    lines[1] = lines[1] | {"quantity": 3.0}
    third = client.post("/v1/orders", json={"lines": lines}).json()
    assert (third["inserted"], third["unchanged"], third["updated"]) == (0, 2, 1)
    assert third["skus_changed"] == [shop.skus[1]]


def test_one_bad_line_stores_nothing_unless_partial(client: TestClient, shop: Shop) -> None:
    lines = [_line("P-1", shop.skus[0], shop.last, 2.0, line=n) for n in (1, 2, 3)]
    lines[1] = lines[1] | {"quantity": "many"}
    lines.append(_line("P-1", "NO-SUCH-SKU", shop.last, 1.0, line=4))
    refused = client.post("/v1/orders", json={"lines": lines})
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"] == "invalid_lines"
    assert body["detail"]["lines"] == [
        {"index": 1, "column": "quantity", "reason": "not a number"},
        {"index": 3, "column": "sku", "reason": "unknown sku"},
    ]
    with shop.engine.connect() as conn:
        stored = conn.execute(text("SELECT COUNT(*) FROM order_lines WHERE order_id = 'P-1'"))
        assert stored.scalar_one() == 0
    kept = client.post("/v1/orders", params={"partial": "true"}, json={"lines": lines})
    assert kept.status_code == 200
    assert (kept.json()["inserted"], len(kept.json()["rejected"])) == (2, 2)
    with shop.engine.connect() as conn:
        lines_kept = conn.execute(
            text("SELECT line FROM order_lines WHERE order_id = 'P-1' ORDER BY line")
        ).scalars()
        assert list(lines_kept) == [1, 3]


def test_keys_and_limits(client: TestClient, shop: Shop) -> None:
    line = _line("K-1", shop.skus[0], shop.last, 1.0)
    assert (
        client.post("/v1/orders", json={"lines": [line]}, headers={"X-API-Key": ""}).status_code
        == 401
    )
    read = client.post("/v1/orders", json={"lines": [line]}, headers={"X-API-Key": READ_KEY})
    assert read.status_code == 403
    ops = client.post("/v1/orders", json={"lines": [line]}, headers={"X-API-Key": OPS_KEY})
    assert ops.status_code == 200
    too_many = client.post("/v1/orders", json={"lines": [line] * 10_001})
    assert too_many.status_code in (413, 422)
    unknown = client.post("/v1/orders", json={"lines": [line | {"colour": "red"}]})
    assert unknown.status_code == 422 and "colour" in unknown.text
    future = client.post("/v1/orders", json={"lines": [line | {"ordered_at": "2999-01-01"}]})
    assert future.json()["detail"]["lines"] == [
        {"index": 0, "column": "ordered_at", "reason": "date in the future"}
    ]


def test_service_without_a_running_app_stores_and_reports(shop: Shop) -> None:
    """The service alone (the CLI or a script): the push is stored, no cache to tell."""
    day = last_sales_date(shop.engine)
    assert day is not None
    report = push_orders(shop.engine, None, [_line("S-1", shop.skus[2], shop.last, 2.0)])
    assert (report.inserted, report.skus_changed) == (1, [shop.skus[2]])
    assert TOKEN_TTL > 0


@pytest.mark.parametrize("shop", ["postgresql"], indirect=True)  # a TCP relay to cut
def test_a_database_outage_during_a_push_loses_nothing(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is cut in the middle of the transaction: 503, nothing half-stored, and the
    same batch sent again stores it whole. (The cut is made from inside the transaction, so
    the push is stored in this process, not in the push process.)"""
    monkeypatch.setattr(orders, "store_batches", lines_module.push_batches)
    url = make_url(shop.settings.database_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    relay.start()
    relayed = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    settings = shop.settings.model_copy(update={"database_url": relayed})
    bump = lines_module._bump_versions

    def cut_then_bump(*args: object, **kwargs: object) -> object:
        relay.stop()  # the lines and the daily sales are written, not committed
        return bump(*args, **kwargs)  # type: ignore[arg-type]

    batch = [_line("OUT-1", s, shop.last, 5.0) for s in shop.skus[:2]]
    batch[1]["line"] = 2
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            client.headers["X-API-Key"] = INGEST_KEY
            monkeypatch.setattr(lines_module, "_bump_versions", cut_then_bump)
            down = client.post("/v1/orders", json={"lines": batch})
            assert down.status_code == 503, down.text
            assert down.json()["error"] == "database_unavailable"
            with shop.engine.connect() as conn:
                none = conn.execute(
                    text("SELECT COUNT(*) FROM order_lines WHERE order_id = 'OUT-1'")
                )
                assert none.scalar_one() == 0
            monkeypatch.setattr(lines_module, "_bump_versions", bump)
            relay.start()
            again = client.post("/v1/orders", json={"lines": batch})
            assert again.status_code == 200, again.text
            assert again.json()["inserted"] == 2
    finally:
        relay.stop()


def test_a_stored_run_no_longer_answers_for_a_pushed_sku(shop: Shop, client: TestClient) -> None:
    """A forecast-all run made before the push is stale for the pushed SKU only: a worker that
    learns of the push (by its own poll) computes that SKU and still reads the others' run."""
    registry = Registry(shop.settings.models_dir)
    run_forecast_all(shop.engine, registry, quantiles=shop.settings.quantiles)
    service: ForecastService = client.app.state.forecasts  # type: ignore[attr-defined]
    worker = ForecastService(service.engine, service.holder, shop.settings.quantiles)
    worker.history.token_ttl = 0.0
    sku, other = shop.skus[3], shop.skus[4]
    before = worker.forecast([sku, other]).forecasts
    units = _units(shop.engine, sku, shop.last)
    # Another process pushes (no cache of this worker is told).
    pushed = push_orders(shop.engine, None, [_line("RUN-1", sku, shop.last, 280.0)])
    assert pushed.skus_changed == [sku]
    worker.cache.entries.clear()  # even a cold cache must not take the run's stale answer
    after = worker.forecast([sku, other]).forecasts
    assert after[0].days[0].mean > before[0].days[0].mean + 5
    assert after[1] == before[1]
    undo = _line("RUN-1", sku, shop.last, 280.0) | {"status": "cancelled"}
    push_orders(shop.engine, None, [undo])
    assert _units(shop.engine, sku, shop.last) == units


def test_sale_dates_follow_a_push_and_its_cancellation(shop: Shop) -> None:
    """A push moves a SKU's last sale day only through its own days; emptying that day (every
    line cancelled) sends the SKU back to the day before that had units."""
    with shop.engine.connect() as conn:
        sold = (
            conn.execute(
                text("SELECT sku FROM daily_sales WHERE date = :d AND units > 0 ORDER BY sku DESC"),
                {"d": shop.last},
            )
            .scalars()
            .all()
        )
    sku = next(s for s in sold if s in shop.skus)

    def dates() -> tuple[object, object]:
        with shop.engine.connect() as conn:
            row = conn.execute(
                text("SELECT first_sale_date, last_sale_date FROM products WHERE sku = :s"),
                {"s": sku},
            ).one()
            return tuple(str(v)[:10] for v in row)

    with shop.engine.connect() as conn:
        lines = conn.execute(
            text(
                "SELECT order_id, line, quantity FROM order_lines WHERE sku = :s AND sale_date = :d"
            ),
            {"s": sku, "d": shop.last},
        ).all()
        before_last = conn.execute(
            text("SELECT MAX(date) FROM daily_sales WHERE sku = :s AND date < :d AND units > 0"),
            {"s": sku, "d": shop.last},
        ).scalar_one()
    first, last = dates()
    assert last == shop.last and lines
    cancel = [
        _line(str(o), sku, shop.last, float(q), line=int(n)) | {"status": "cancelled"}
        for o, n, q in lines
    ]
    assert push_orders(shop.engine, None, cancel).updated == len(lines)
    assert dates() == (first, str(before_last)[:10])
    restore = [_line(str(o), sku, shop.last, float(q), line=int(n)) for o, n, q in lines]
    assert push_orders(shop.engine, None, restore).updated == len(lines)
    assert dates() == (first, last)
