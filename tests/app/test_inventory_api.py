"""GET/POST /v1/inventory and GET /v1/inventory-plan on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.services.inventory import run_inventory_plan
from featurestore.tables import InventoryPlan, Product
from tests.app.conftest import Served
from training.predict import BundleForecaster

SKU_PARAMS = "lead_time_days=7&review_days=7&service_level=0.95&on_hand=12&on_order=0"


def skus(served: Served) -> list[str]:
    """The active SKUs (discontinued ones get no forecast)."""
    query = select(Product.sku).where(Product.status != "discontinued").order_by(Product.sku)
    with served.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def test_get_answers_the_policy_for_one_sku(client: TestClient, served: Served) -> None:
    sku = skus(served)[0]
    res = client.get(f"/v1/inventory/{sku}?{SKU_PARAMS}")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["sku"] == sku and body["model_version"] == served.version
    assert (body["lead_time_days"], body["review_days"], body["service_level"]) == (7, 7, 0.95)
    demand = body["lead_time_demand"]
    assert {"p50", "p90", "p95"} <= set(demand["quantiles"])
    assert body["order_up_to"] == demand["quantiles"]["p95"]
    assert body["safety_stock"] == pytest.approx(body["order_up_to"] - demand["mean"], abs=1e-3)
    assert body["reorder_point"] <= body["order_up_to"]
    assert body["suggested_order"] == max(0.0, body["order_up_to"] - 12)
    for value in (*demand["quantiles"].values(), body["order_up_to"], body["reorder_point"]):
        assert value == int(value) and value >= 0
    # The mean is the sum of the forecast's daily means over lead time + review.
    fc = client.get(f"/v1/forecast/{sku}?horizon=14").json()["forecasts"][0]["days"]
    assert demand["mean"] == pytest.approx(sum(d["mean"] for d in fc), abs=1e-3)


def test_not_the_sum_of_daily_quantiles(client: TestClient, served: Served) -> None:
    sku = skus(served)[0]
    body = client.get(f"/v1/inventory/{sku}?lead_time_days=7&review_days=7&service_level=0.9")
    days = client.get(f"/v1/forecast/{sku}?horizon=14&quantiles=0.9").json()
    summed = sum(d["quantiles"]["p90"] for d in days["forecasts"][0]["days"])
    assert body.json()["order_up_to"] < summed


def test_monotone_in_service_level_and_lead_time(client: TestClient, served: Served) -> None:
    sku = skus(served)[1]
    ups = {}
    for lead in (2, 5, 10):
        for level in (0.6, 0.8, 0.95, 0.99):
            res = client.get(
                f"/v1/inventory/{sku}?lead_time_days={lead}&review_days=2&service_level={level}"
            )
            ups[lead, level] = res.json()["order_up_to"]
    for lead in (2, 5, 10):
        row = [ups[lead, q] for q in (0.6, 0.8, 0.95, 0.99)]
        assert row == sorted(row)
    for level in (0.6, 0.8, 0.95, 0.99):
        col = [ups[lead, level] for lead in (2, 5, 10)]
        assert col == sorted(col)


def test_post_takes_per_sku_lead_times_and_stock(client: TestClient, served: Served) -> None:
    a, b = skus(served)[:2]
    items = [
        {"sku": a, "lead_time_days": 3, "review_days": 0, "on_hand": 1000},
        {"sku": b, "lead_time_days": 10, "review_days": 4, "service_level": 0.8, "on_order": 2},
    ]
    res = client.post("/v1/inventory", json={"items": items})
    assert res.status_code == 200, res.text
    got = res.json()["items"]
    assert [g["sku"] for g in got] == [a, b]
    assert (got[0]["lead_time_days"], got[0]["review_days"], got[0]["suggested_order"]) == (3, 0, 0)
    assert (got[1]["lead_time_days"], got[1]["service_level"]) == (10, 0.8)
    single = client.get(f"/v1/inventory/{b}?lead_time_days=10&review_days=4&service_level=0.8")
    assert single.json()["order_up_to"] == got[1]["order_up_to"]
    too_many = {"items": [{"sku": a, "lead_time_days": 1}] * 1001}
    assert client.post("/v1/inventory", json=too_many).status_code == 422


def test_lead_time_comes_from_the_product(client: TestClient, served: Served) -> None:
    sku = skus(served)[2]
    res = client.get(f"/v1/inventory/{sku}")
    assert res.status_code == 422 and "lead_time_days" in res.json()["detail"]
    with served.engine.begin() as conn:
        conn.execute(
            update(Product).where(Product.sku == sku).values(attributes={"lead_time_days": 5})
        )
    try:
        assert client.get(f"/v1/inventory/{sku}?review_days=3").json()["lead_time_days"] == 5
        # The request overrides the product.
        got = client.get(f"/v1/inventory/{sku}?review_days=3&lead_time_days=2").json()
        assert got["lead_time_days"] == 2
    finally:
        with served.engine.begin() as conn:
            conn.execute(update(Product).where(Product.sku == sku).values(attributes=None))


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("lead_time_days=-1", "lead_time_days"),
        ("lead_time_days=7&on_hand=-3", "on_hand"),
        ("lead_time_days=7&on_order=-1", "on_order"),
        ("lead_time_days=7&review_days=-1", "review_days"),
        ("lead_time_days=7&service_level=0.5", "service_level"),
        ("lead_time_days=7&service_level=0.9995", "service_level"),
        ("lead_time_days=12&review_days=7", "horizon of 14"),
    ],
)
def test_bad_requests_are_422(client: TestClient, served: Served, query: str, needle: str) -> None:
    res = client.get(f"/v1/inventory/{skus(served)[0]}?{query}")
    assert res.status_code == 422, res.text
    assert needle in json.dumps(res.json()["detail"])


def test_unknown_sku_is_404(client: TestClient) -> None:
    res = client.get("/v1/inventory/NOPE?lead_time_days=3")
    assert res.status_code == 404 and res.json()["error"] == "unknown_sku"


def test_cold_start_skus_get_a_wider_distribution(served: Served) -> None:
    from app.services.inventory import calibration

    bundle = served.registry.load_champion()
    cal = calibration(bundle)
    assert cal.cold_widen >= 1.0
    assert BundleForecaster(bundle).model.horizon == cal.blocks.horizon


def page(client: TestClient, **params: Any) -> Any:
    return client.get("/v1/inventory-plan", params=params)


def test_plan_is_stored_whole_and_paginated(client: TestClient, served: Served) -> None:
    result = run_inventory_plan(
        served.engine, served.registry, lead_time_days=5, review_days=2, service_level=0.9
    )
    frame = result.frame
    assert len(frame) == len(skus(served))
    assert np.all(frame["order_up_to"] >= frame["reorder_point"])
    assert np.all(frame["order_up_to"] == np.round(frame["order_up_to"]))
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        res = page(client, limit=5, **({"cursor": cursor} if cursor else {}))
        assert res.status_code == 200 and res.headers["x-plan-id"] == result.plan_id
        seen += [json.loads(line) for line in res.text.splitlines()]
        cursor = res.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert [r["sku"] for r in seen] == frame["sku"].tolist()
    assert [r["order_up_to"] for r in seen] == frame["order_up_to"].tolist()
    got = list(csv.DictReader(io.StringIO(page(client, format="csv", limit=1000).text)))
    assert got[0]["lead_time_days"] == "5" and float(got[0]["service_level"]) == 0.9
    # A plan still running is invisible: readers keep the complete one.
    with served.engine.begin() as conn:
        conn.execute(update(InventoryPlan).values(status="running"))
    try:
        assert page(client).status_code == 404
    finally:
        with served.engine.begin() as conn:
            conn.execute(update(InventoryPlan).values(status="complete"))


def test_a_remembered_decision_follows_the_stock(client: TestClient, served: Served) -> None:
    sku = skus(served)[3]
    query = f"/v1/inventory/{sku}?lead_time_days=4&review_days=3&service_level=0.9"
    first = client.get(query + "&on_hand=0").json()
    again = client.get(query + "&on_hand=2.5&on_order=1").json()
    assert again["order_up_to"] == first["order_up_to"]
    assert again["suggested_order"] == max(0.0, float(np.ceil(first["order_up_to"] - 3.5)))
    assert (again["on_hand"], again["on_order"]) == (2.5, 1.0)


def test_a_remembered_decision_is_answered_in_front_of_the_router(
    client: TestClient, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane (app.services.lane) answers a remembered decision with the request's stock and
    the route's key checks; anything it does not take plainly reaches the route."""
    sku = skus(served)[5]
    query = f"/v1/inventory/{sku}?lead_time_days=3&review_days=2&service_level=0.8"
    first = client.get(query).json()
    service = client.app.state.inventory  # type: ignore[attr-defined]

    def no_route(*args: object, **kwargs: object) -> object:
        raise AssertionError("the route was called for a remembered decision")

    monkeypatch.setattr(service, "decide", no_route)
    lane = client.get(query + "&on_hand=1&on_order=0.5")
    assert lane.status_code == 200 and lane.headers["content-type"] == "application/json"
    body = lane.json()
    assert {
        k: v for k, v in body.items() if k not in ("on_hand", "on_order", "suggested_order")
    } == {k: v for k, v in first.items() if k not in ("on_hand", "on_order", "suggested_order")}
    assert (body["on_hand"], body["on_order"]) == (1.0, 0.5)
    assert body["suggested_order"] == max(0.0, float(np.ceil(first["order_up_to"] - 1.5)))
    assert client.get(query, headers={"X-API-Key": "not-a-key"}).status_code == 403
    assert client.get(query + "&on_hand=-1").status_code == 422  # the route's validation
    with pytest.raises(AssertionError, match="route was called"):
        client.get(query.replace("service_level=0.8", "service_level=0.85"))
