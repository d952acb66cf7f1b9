"""GET /v1/forecast/aggregate and `forecast-all --levels`: totals coherent with their SKUs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from app.cli import cli
from featurestore.config import get_settings
from featurestore.db import engine_for
from featurestore.ingest import ingest_file
from featurestore.readers import read_products
from tests.app.conftest import OPS_KEY, READ_KEY, Served

LEVELS = ("total", "category", "store", "category_store")


def _groups(served: Served, level: str) -> dict[str, list[str]]:
    products = read_products(served.engine)
    active = products[products["status"] != "discontinued"]
    if level == "total":
        return {"total": sorted(active["sku"])}
    if level == "category_store":
        keys = active["category"] + "/" + active["store"]
    else:
        keys = active[level]
    return {str(k): sorted(g["sku"]) for k, g in active.groupby(keys)}


@pytest.mark.parametrize("level", LEVELS)
def test_total_means_equal_the_sum_of_the_sku_forecasts_every_day(
    client: TestClient, served: Served, level: str
) -> None:
    groups = _groups(served, level)
    listed = client.get("/v1/forecast/aggregate/keys", params={"level": level}).json()
    assert {k["key"]: k["skus"] for k in listed["keys"]} == {k: len(v) for k, v in groups.items()}
    for key, skus in groups.items():
        res = client.get("/v1/forecast/aggregate", params={"level": level, "key": key})
        assert res.status_code == 200, res.text
        total = res.json()
        sku_fc = client.post("/v1/forecast", json={"skus": skus}).json()
        assert total["model_version"] == sku_fc["model_version"] == served.version
        by_day: dict[str, float] = {}
        for fc in sku_fc["forecasts"]:
            for day in fc["days"]:
                by_day[day["date"]] = by_day.get(day["date"], 0.0) + day["mean"]
        assert [d["date"] for d in total["days"]] == sorted(by_day)
        for day in total["days"]:
            assert abs(day["mean"] - by_day[day["date"]]) < 0.005, (key, day)  # to the cent
            q = day["quantiles"]
            assert 0 <= q["p10"] <= q["p50"] <= q["p90"]
        assert total["skus"] == len(skus) and total["horizon"] == len(total["days"]) == 14
        period = total["period"]
        assert abs(period["mean"] - sum(by_day.values())) < 0.005


def test_total_quantiles_are_not_the_summed_sku_quantiles(
    client: TestClient, served: Served
) -> None:
    skus = _groups(served, "total")["total"]
    total = client.get("/v1/forecast/aggregate", params={"level": "total"}).json()
    sku_fc = client.post("/v1/forecast", json={"skus": skus}).json()
    first = total["days"][0]["date"]
    summed = {
        name: sum(d["quantiles"][name] for f in sku_fc["forecasts"] for d in f["days"]
                  if d["date"] == first)
        for name in ("p10", "p90")
    }  # fmt: skip
    q = total["days"][0]["quantiles"]
    # Errors that do not all go the same way partly cancel: the total's band is narrower.
    assert q["p90"] - q["p10"] < summed["p90"] - summed["p10"]
    assert total["paths"] >= 14


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"level": "category", "key": "NO_SUCH_CATEGORY"}, 404, "not_found"),
        ({"level": "store", "key": "nowhere"}, 404, "not_found"),
        ({"level": "brand", "key": "x"}, 422, "invalid_request"),
        ({"level": "category"}, 422, "invalid_request"),
        ({"level": "total", "horizon": 99}, 422, "horizon_out_of_range"),
        ({"level": "total", "quantiles": "0.1,1.5"}, 422, "invalid_request"),
        ({"key": "x"}, 422, "invalid_request"),
    ],
)
def test_unknown_level_or_key_and_bad_parameters(
    client: TestClient, params: dict[str, object], status: int, code: str
) -> None:
    res = client.get("/v1/forecast/aggregate", params=params)
    assert res.status_code == status, res.text
    assert res.json()["error"] == code


def test_totals_need_a_read_key(client: TestClient) -> None:
    res = client.get("/v1/forecast/aggregate", params={"level": "total"}, headers={"X-API-Key": ""})
    assert res.status_code == 401
    res = client.get(
        "/v1/forecast/aggregate", params={"level": "total"}, headers={"X-API-Key": "x"}
    )
    assert res.status_code == 403


@pytest.fixture
def served_env(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The CLI pointed at the served store and its models."""
    monkeypatch.setenv("SALESFC_DATABASE_URL", served.settings.database_url)
    monkeypatch.setenv("SALESFC_MODELS_DIR", str(served.settings.models_dir))
    get_settings.cache_clear()
    engine_for.cache_clear()
    yield served
    engine_for(served.settings.database_url).dispose()  # the CLI's engine: close its connections
    get_settings.cache_clear()
    engine_for.cache_clear()


def test_forecast_all_levels_writes_coherent_totals(served_env: Served, tmp_path: Path) -> None:
    runner = CliRunner()
    plain = tmp_path / "plain.parquet"
    res = runner.invoke(cli, ["forecast-all", "--no-store", "--out", str(plain)])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "plain_totals.parquet").exists()
    out = tmp_path / "fc.csv"
    res = runner.invoke(
        cli, ["forecast-all", "--no-store", "--out", str(out), "--levels", "category,store"]
    )
    assert res.exit_code == 0, res.output
    skus = pd.read_csv(out)
    assert list(skus.columns) == list(pd.read_parquet(plain).columns)  # unchanged by --levels
    totals = pd.read_csv(tmp_path / "fc_totals.csv")
    assert list(totals.columns) == ["level", "key", "date", "skus", "mean", "p10", "p50", "p90"]
    products = read_products(served_env.engine)[["sku", "category", "store"]]
    merged = skus.merge(products, on="sku")
    for level in ("category", "store"):
        expected = merged.groupby([level, "date"])["mean"].sum()
        got = totals[totals["level"] == level].set_index(["key", "date"])["mean"]
        assert (got - expected.reindex(got.index)).abs().max() < 0.005
    assert (totals["p10"] <= totals["p90"]).all()

    shown = runner.invoke(cli, ["forecast-all", "--no-store", "--levels", "total"])
    assert shown.exit_code == 0, shown.output
    assert "totals" in shown.output and "total" in shown.output
    bad = runner.invoke(cli, ["forecast-all", "--no-store", "--levels", "brand"])
    assert bad.exit_code == 2 and "brand" in bad.output


def test_dashboard_cookie_reads_but_never_operates(client: TestClient) -> None:
    """The sign-in form's cookie opens the read API and the pages, not operations."""
    bare = {"X-API-Key": ""}
    res = client.get("/dashboard", headers=bare, follow_redirects=False)
    assert (
        res.status_code == 303 and res.headers["location"] == "/dashboard/login?next=%2Fdashboard"
    )
    wrong = client.post("/dashboard/login", data={"key": "nope"}, headers=bare)
    assert wrong.status_code == 401 and "not a read key" in wrong.text
    res = client.post(
        "/dashboard/login",
        data={"key": READ_KEY, "next": "https://elsewhere.example/x"},
        headers=bare,
        follow_redirects=False,
    )
    assert res.status_code == 303 and res.headers["location"] == "/dashboard"  # never off-site
    cookie = res.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    client.cookies.clear()  # sent explicitly below
    jar = {"X-API-Key": "", "Cookie": f"salesfc_key={READ_KEY}"}
    res = client.get("/v1/forecast/aggregate", params={"level": "total"}, headers=jar)
    assert res.status_code == 200
    page = client.get("/dashboard/totals", headers=jar)
    assert (
        page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    )
    ops = client.post(
        "/v1/models/rollback", headers={"X-API-Key": "", "Cookie": f"salesfc_key={OPS_KEY}"}
    )
    assert ops.status_code == 401  # operations take the header only
    for name in ("dashboard.js", "dashboard.css"):
        assert client.get(f"/dashboard/static/{name}", headers=bare).status_code == 200
    assert client.get("/dashboard/static/..%2Fmain.py", headers=bare).status_code == 404


def test_a_product_with_nothing_to_forecast_leaves_its_total_alone(
    client: TestClient, served: Served, tmp_path: Path
) -> None:
    """A product row without sales or launch date is not counted (it would fail the total)."""
    products = read_products(served.engine)
    row = products[products["status"] != "discontinued"].iloc[0]
    before = client.get(
        "/v1/forecast/aggregate", params={"level": "store", "key": row["store"]}
    ).json()
    csv = tmp_path / "products.csv"
    csv.write_text(f"sku,category,store\nNEVER_SOLD_1,{row['category']},{row['store']}\n")
    report = ingest_file(served.engine, "products", csv)
    assert report.rows_accepted == 1
    snap = client.app.state.forecasts.snapshot(force=True)  # type: ignore[attr-defined]
    assert "NEVER_SOLD_1" in snap.position
    try:
        res = client.get("/v1/forecast/aggregate", params={"level": "store", "key": row["store"]})
        assert res.status_code == 200, res.text
        assert res.json()["skus"] == before["skus"]
        lone = client.get(
            "/v1/forecast/aggregate", params={"level": "category_store", "key": "(none)/nowhere"}
        )
        assert lone.status_code == 404
    finally:
        with served.engine.begin() as conn:
            conn.exec_driver_sql("delete from products where sku = 'NEVER_SOLD_1'")
        client.app.state.forecasts.snapshot(force=True)  # type: ignore[attr-defined]


def test_a_total_computed_without_the_cache_equals_the_one_from_serialised_forecasts(
    served: Served,
) -> None:
    """With the cache off a total reads its SKUs' means from the prediction's arrays (nothing
    serialised); with it on, from the serialised forecasts it remembers: the same answer."""
    from app.services.aggregate import AggregateService
    from app.services.champion import ChampionHolder
    from app.services.forecasting import ForecastService

    quantiles = served.settings.quantiles
    answers = {}
    for use_cache in (False, True):
        forecasts = ForecastService(
            served.engine, ChampionHolder(served.registry), quantiles, use_cache=use_cache
        )
        service = AggregateService(forecasts)
        key = service.keys("store")[0]
        computed = forecasts.answers(service.members("store", key), None, None, serialise=False)
        assert (computed.arrays is None) == use_cache
        assert bool(computed.bodies) == use_cache
        answers[use_cache] = service.total("store", key, None, None)
    assert answers[False] == answers[True]
    assert answers[False]["skus"] > 1
