"""The API on SQLite and PostgreSQL: forecasts, what-if, explain, cache, registry and errors."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.history import TOKEN_TTL
from featurestore.readers import last_sales_date, latest_window, read_products
from tests.app.conftest import OPS_KEY, READ_KEY, Served


def _skus(served: Served) -> list[str]:
    products = read_products(served.engine)
    return sorted(products.loc[products["status"] == "active", "sku"])


def test_health_and_readiness(client: TestClient, served: Served) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == served.registry.champion()
    assert ready.json()["database"] is True


def test_single_sku_forecast(client: TestClient, served: Served) -> None:
    sku = _skus(served)[0]
    response = client.get(f"/v1/forecast/{sku}", params={"quantiles": "0.1,0.5,0.9"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == served.registry.champion()
    as_of = last_sales_date(served.engine)
    assert body["data_until"] == as_of.isoformat()
    days = body["forecasts"][0]["days"]
    assert len(days) == 14
    assert days[0]["date"] == (as_of + dt.timedelta(days=1)).isoformat()
    for day in days:
        q = day["quantiles"]
        assert set(q) == {"p10", "p50", "p90"}
        assert 0 <= q["p10"] <= q["p50"] <= q["p90"]
        assert day["mean"] >= 0
    short = client.get(f"/v1/forecast/{sku}", params={"horizon": 5}).json()
    assert len(short["forecasts"][0]["days"]) == 5


def test_batch_equals_single(client: TestClient, served: Served) -> None:
    skus = _skus(served)
    batch = client.post("/v1/forecast", json={"skus": skus, "horizon": 7})
    assert batch.status_code == 200, batch.text
    forecasts = {f["sku"]: f for f in batch.json()["forecasts"]}
    assert list(forecasts) == skus
    one = client.get(f"/v1/forecast/{skus[3]}", params={"horizon": 7}).json()["forecasts"][0]
    assert [d["mean"] for d in one["days"]] == pytest.approx(
        [d["mean"] for d in forecasts[skus[3]]["days"]], rel=1e-6
    )


def test_what_if_price_rise_lowers_demand(client: TestClient, served: Served) -> None:
    as_of = last_sales_date(served.engine)
    start, end = as_of + dt.timedelta(days=1), as_of + dt.timedelta(days=14)
    products = read_products(served.engine)
    skus = _skus(served)
    base = client.post("/v1/forecast", json={"skus": skus}).json()["forecasts"]
    volumes = {f["sku"]: sum(d["mean"] for d in f["days"]) for f in base}
    sku = max(volumes, key=volumes.__getitem__)
    assert sku in set(products["sku"])
    scenario = {"prices": [{"sku": sku, "start": str(start), "end": str(end), "price": 1000.0}]}
    response = client.post("/v1/forecast", json={"skus": [sku], "scenario": scenario})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scenario"] is True
    days = body["forecasts"][0]["days"]
    assert all(d["baseline_mean"] is not None for d in days)
    assert sum(d["delta"] for d in days) < 0
    for d in days:
        assert d["delta"] == pytest.approx(d["mean"] - d["baseline_mean"])


def test_explain_sums_to_the_forecast(client: TestClient, served: Served) -> None:
    sku = _skus(served)[1]
    response = client.get(f"/v1/forecast/{sku}/explain")
    assert response.status_code == 200, response.text
    days = response.json()["days"]
    assert len(days) == 14
    forecast = client.get(f"/v1/forecast/{sku}").json()["forecasts"][0]["days"]
    for day, fc in zip(days, forecast, strict=True):
        groups = day["contributions"]
        assert set(groups) == {"lags_trend", "price", "promotion", "calendar_events", "hierarchy"}
        assert day["baseline"] + sum(groups.values()) == pytest.approx(day["forecast"], rel=1e-6)
        assert day["forecast"] == pytest.approx(fc["mean"], rel=1e-5)


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/forecast/NO_SUCH_SKU", {}, 404, "unknown_sku"),
        ("/v1/forecast/{sku}", {"horizon": 99}, 422, "horizon_out_of_range"),
        ("/v1/forecast/{sku}", {"horizon": 0}, 422, "invalid_request"),
        ("/v1/forecast/{sku}", {"quantiles": "0.1,abc"}, 422, "invalid_request"),
        ("/v1/forecast/{sku}", {"quantiles": "0,1.5"}, 422, "invalid_request"),
        ("/v1/no/such/route", {}, 404, "not_found"),
    ],
)
def test_errors_have_one_shape(
    client: TestClient, served: Served, path: str, params: dict, status: int, code: str
) -> None:
    response = client.get(path.format(sku=_skus(served)[0]), params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["detail"]


def test_quantile_errors_keep_their_words(client: TestClient, served: Served) -> None:
    sku = _skus(served)[0]
    for raw, detail in (
        ("0.1,abc", "quantiles must be numbers, got '0.1,abc'"),
        ("0,1.5", "quantiles must lie strictly between 0 and 1"),
    ):
        response = client.get(f"/v1/forecast/{sku}", params={"quantiles": raw})
        assert response.status_code == 422
        assert response.json() == {"error": "invalid_request", "detail": detail}
    body = client.post("/v1/forecast", json={"skus": [sku], "quantiles": [0.5, 1.0]}).json()
    assert body["error"] == "invalid_request"
    assert "quantiles must lie strictly between 0 and 1" in body["detail"][0]["msg"]


def test_malformed_body(client: TestClient) -> None:
    for body in ({"skus": []}, {"skus": "x"}, {"nope": 1}, {"skus": ["a"], "quantiles": [2]}):
        response = client.post("/v1/forecast", json=body)
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_request"
    raw = client.post(
        "/v1/forecast", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert raw.status_code == 422


def test_keys(client: TestClient, served: Served) -> None:
    sku = _skus(served)[0]
    no_key = client.get(f"/v1/forecast/{sku}", headers={"X-API-Key": ""})
    assert no_key.status_code == 401 and no_key.json()["error"] == "missing_api_key"
    wrong = client.get(f"/v1/forecast/{sku}", headers={"X-API-Key": "wrong"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
    ops_ok = client.get(f"/v1/forecast/{sku}", headers={"X-API-Key": OPS_KEY})
    assert ops_ok.status_code == 200
    read_on_ops = client.post("/v1/models/rollback", headers={"X-API-Key": READ_KEY})
    assert read_on_ops.status_code == 403
    # health and readiness stay open for orchestrators
    assert client.get("/healthz", headers={"X-API-Key": ""}).status_code == 200


def test_keys_never_logged(
    client: TestClient, served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    client.get(f"/v1/forecast/{_skus(served)[0]}", headers={"X-API-Key": "leaky-secret"})
    captured = capsys.readouterr()
    assert "leaky-secret" not in captured.out + captured.err
    assert OPS_KEY not in captured.out + captured.err


def test_cache_serves_repeat_and_new_data_invalidates(client: TestClient, served: Served) -> None:
    service = client.app.state.forecasts  # type: ignore[attr-defined]
    service.history.token_ttl = 0.0  # check the data token on every request
    sku = _skus(served)[2]
    first = client.get(f"/v1/forecast/{sku}").json()
    size = len(service.cache.entries)
    again = client.get(f"/v1/forecast/{sku}").json()
    assert again == first
    assert len(service.cache.entries) == size
    key = next(k for k in service.cache.entries if k[0] == sku)
    # a cached answer is what is served: tamper with it and see it come back
    cached = service.cache.entries[key]
    tampered = cached.body.replace(b'"cold_start":false', b'"cold_start":true')
    service.cache.entries[key] = type(cached)(cached.as_of, tampered)
    assert client.get(f"/v1/forecast/{sku}").json()["forecasts"][0]["cold_start"] is True
    # new sales for the SKU change the data token: the forecast is recomputed
    import pandas as pd

    from featurestore.ingest import ingest_frames

    day = last_sales_date(served.engine) + dt.timedelta(days=1)
    sales = pd.DataFrame({"sku": [sku], "date": [day], "units": [3.0]})
    if day <= dt.datetime.now(dt.UTC).date():
        ingest_frames(served.engine, "sales", [sales], source="test-new-day")
        try:
            fresh = client.get(f"/v1/forecast/{sku}").json()
            assert fresh["data_until"] == day.isoformat()
            assert fresh["forecasts"][0]["cold_start"] is False
        finally:
            from featurestore.tables import DailySales

            with served.engine.begin() as conn:
                conn.execute(
                    DailySales.__table__.delete().where(
                        DailySales.sku == sku, DailySales.date == day
                    )
                )
    service.history.token_ttl = TOKEN_TTL


def test_token_is_trusted_for_its_ttl_then_checked(client: TestClient, served: Served) -> None:
    """Within the TTL a worker serves from memory without asking the database; after it, an
    ingestion (a new data token) is seen and the cached forecasts are not served any more."""
    import pandas as pd

    from featurestore.ingest import ingest_frames

    service = client.app.state.forecasts  # type: ignore[attr-defined]
    sku = _skus(served)[3]
    service.history.token_ttl = 3600.0
    try:
        first = client.get(f"/v1/forecast/{sku}").json()
        token = service.snapshot().token
        assert service.cached_json([sku], None, None) is not None  # answered on the event loop
        promo = pd.DataFrame(
            {
                "promo_id": ["test-token-ttl"],
                "sku": [sku],
                "start_date": [dt.date(2030, 1, 1)],
                "end_date": [dt.date(2030, 1, 2)],
            }
        )
        ingest_frames(served.engine, "promotions", [promo], source="test-token-ttl")
        # still trusted: the same cached answer
        assert client.get(f"/v1/forecast/{sku}").json() == first
        assert service.snapshot().token == token
        service.history.token_ttl = 0.0
        assert service.cached_json([sku], None, None) is None
        client.get(f"/v1/forecast/{sku}")
        assert service.snapshot().token != token
        assert any(k[2] == service.snapshot().token for k in service.cache.entries if k[0] == sku)
    finally:
        service.history.token_ttl = TOKEN_TTL
        from featurestore.tables import Promotion

        with served.engine.begin() as conn:
            conn.execute(Promotion.__table__.delete().where(Promotion.promo_id == "test-token-ttl"))


def test_answers_match_the_documented_schema(client: TestClient, served: Served) -> None:
    """The JSON built from arrays is exactly what ForecastResponse would serialise."""
    from app.schemas import ForecastResponse

    skus = _skus(served)[:3]
    for response in (
        client.get(f"/v1/forecast/{skus[0]}", params={"quantiles": "0.2,0.5,0.95"}),
        client.post("/v1/forecast", json={"skus": skus, "horizon": 7}),
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert ForecastResponse.model_validate(body).model_dump(mode="json") == body
    schema = client.get("/openapi.json").json()
    for path, method in (("/v1/forecast/{sku}", "get"), ("/v1/forecast", "post")):
        ok = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"]["$ref"].endswith("/ForecastResponse")


def test_metrics_endpoint(client: TestClient, served: Served) -> None:
    client.get(f"/v1/forecast/{_skus(served)[0]}")
    text = client.get("/metrics").text
    assert 'salesfc_requests_total{method="GET",route="/v1/forecast/{sku}",status="200"}' in text
    assert "salesfc_request_seconds_bucket" in text
    assert f'salesfc_model_info{{version="{served.registry.champion()}"}} 1.0' in text
    assert "salesfc_forecasts_served_total" in text


def test_no_model_yet(served: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = served.settings.model_copy(update={"models_dir": tmp_path / "empty"})
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = READ_KEY
        assert c.get("/readyz").status_code == 503
        response = c.get(f"/v1/forecast/{_skus(served)[0]}")
        assert response.status_code == 503
        assert response.json()["error"] == "model_not_ready"


def test_database_down_is_503(served: Served) -> None:
    settings = served.settings.model_copy(
        update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"}
    )
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = READ_KEY
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["database"] is False
        response = c.get(f"/v1/forecast/{_skus(served)[0]}")
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"


def test_discontinued_sku_is_a_clear_422(client: TestClient, served: Served) -> None:
    products = read_products(served.engine)
    gone = products.loc[products["status"] == "discontinued", "sku"]
    assert not gone.empty, "the synthetic catalogue has discontinued SKUs"
    response = client.get(f"/v1/forecast/{gone.iloc[0]}")
    assert response.status_code == 422
    assert response.json()["error"] == "sku_discontinued"


def test_nightly_export_pages_by_cursor(client: TestClient, served: Served) -> None:
    import csv
    import io
    import json

    from app.services.batch import run_forecast_all

    result = run_forecast_all(served.engine, served.registry, horizon=14)
    skus = sorted(result.frame["sku"].unique())
    seen: list[dict] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/forecasts", params=params)
        assert response.status_code == 200
        assert response.headers["X-Run-Id"] == result.run_id
        assert response.headers["X-Model-Version"] == served.registry.champion()
        assert response.headers["X-As-Of"] == result.as_of.isoformat()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        seen += [json.loads(line) for line in response.text.splitlines()]
        pages += 1
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            break
    assert pages == len(skus) // 5 + 1
    assert sorted({r["sku"] for r in seen}) == skus
    assert len(seen) == len(skus) * 14 == len({(r["sku"], r["date"]) for r in seen})
    first = result.frame.iloc[0]
    row = next(r for r in seen if r["sku"] == first["sku"] and r["date"] == str(first["date"]))
    assert row["mean"] == pytest.approx(first["mean"], abs=1e-3)
    assert row["p90"] == pytest.approx(first["p90"], abs=1e-3)
    as_csv = client.get("/v1/forecasts", params={"format": "csv", "limit": 1000})
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == len(seen)
    assert list(rows[0]) == ["sku", "date", "mean", "p10", "p50", "p90", "cold_start"]
    # the stored run also answers single-SKU requests without computing
    service = client.app.state.forecasts  # type: ignore[attr-defined]
    service.cache.entries.clear()
    sku = skus[0]
    from app.observability import FORECASTS

    computed = FORECASTS.labels("computed")._value.get()
    answer = client.get(f"/v1/forecast/{sku}", params={"horizon": 14}).json()
    assert FORECASTS.labels("computed")._value.get() == computed
    stored = [r for r in seen if r["sku"] == sku]
    assert [d["mean"] for d in answer["forecasts"][0]["days"]] == pytest.approx(
        [r["mean"] for r in stored], abs=1e-3
    )


def test_export_before_any_run_is_404(served: Served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from featurestore import migrations

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    migrations.upgrade(url)
    settings = served.settings.model_copy(update={"database_url": url})
    with TestClient(create_app(settings)) as c:
        c.headers["X-API-Key"] = READ_KEY
        response = c.get("/v1/forecasts")
        assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize("strategy", ["direct", "multi", "recursive"])
def test_serving_path_equals_the_forecasters_predict(served: Served, strategy: str) -> None:
    """The numpy serving path on the builders' own window gives the means of
    Forecaster.predict on the longer window (required_history), bit for bit, warm and cold."""
    from types import SimpleNamespace

    if strategy == "recursive" and served.settings.database_url.startswith("postgresql"):
        pytest.skip("the window is the same on both backends; recursive is slow to fit twice")
    import numpy as np
    import pandas as pd

    from tests.app.conftest import SMALL_TREES
    from training.forecaster import Forecaster
    from training.pipeline import load_history
    from training.predict import BundleForecaster

    champion = served.registry.load_champion()
    history, products = load_history(served.engine)
    model = Forecaster(
        model="lgbm_tweedie", strategy=strategy, horizon=14, model_params=SMALL_TREES
    ).fit(history, products)
    # A SKU with too little history for the model goes to the cold-start model.
    model.min_rows_per_sku = 200
    # This model alone serves (not the champion's composition of its own model and baselines).
    artifacts = {**champion.artifacts, "model": model}
    artifacts.pop("selection", None)
    fc = BundleForecaster(SimpleNamespace(artifacts=artifacts))  # type: ignore[arg-type]
    as_of = last_sales_date(served.engine)
    skus = _skus(served)
    assert fc.history_days < model.required_history
    short = latest_window(served.engine, skus, n_days=fc.history_days, horizon=14, as_of=as_of)
    full = latest_window(
        served.engine, skus, n_days=model.required_history, horizon=14, as_of=as_of
    )
    got = fc.forecast_arrays(short, products, as_of, 14, [0.1, 0.9])

    origin = pd.Timestamp(as_of)
    known = full[(full["date"] <= origin) & full["units"].notna()].groupby("sku").size()
    cold = set(known[known < model.min_rows_per_sku].index)
    assert cold and cold != set(skus)
    warm = model.predict(full[~full["sku"].isin(cold)], products, origin, 14)
    colds = champion.artifacts["cold_start"].predict(
        full[full["sku"].isin(cold)], products, origin, 14
    )
    ref = pd.concat([warm.assign(cold_start=False), colds.assign(cold_start=True)])
    ref = ref.sort_values(["sku", "date"], kind="stable").reset_index(drop=True)
    assert list(got.sku) == list(ref["sku"])
    assert np.array_equal(got.day.astype("datetime64[D]"), ref["date"].to_numpy("datetime64[D]"))
    assert np.array_equal(got.mean, ref["mean"].to_numpy())
    assert np.array_equal(got.cold_start, ref["cold_start"].to_numpy())
    q = champion.artifacts["calibration"].predict(got.mean, got.horizon, [0.1, 0.9])
    assert np.array_equal(got.quantiles, q)


def test_cached_answers_are_served_in_front_of_the_router(
    client: TestClient, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache hit is answered by StoredForecastLane (no route, no thread, no compute), with
    the same key checks; anything it does not serve goes to the route as before."""
    from app.observability import REQUESTS

    service = client.app.state.forecasts  # type: ignore[attr-defined]
    sku = _skus(served)[4]
    first = client.get(f"/v1/forecast/{sku}", params={"horizon": 7, "quantiles": "0.5"})
    assert first.status_code == 200

    def no_compute(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the route was called for a cached answer")

    # Every computed forecast goes through answers() (the coalescer calls it, as does
    # forecast_json).
    monkeypatch.setattr(service, "answers", no_compute)
    label = {"method": "GET", "route": "/v1/forecast/{sku}", "status": "200"}
    before = REQUESTS.labels(**label)._value.get()
    again = client.get(f"/v1/forecast/{sku}", params={"horizon": 7, "quantiles": "0.5"})
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["content-type"] == "application/json"
    assert again.headers["x-request-id"]
    assert REQUESTS.labels(**label)._value.get() == before + 1
    # keys are checked as on the route: no cached data without a valid key
    missing = client.get(
        f"/v1/forecast/{sku}", params={"horizon": 7, "quantiles": "0.5"}, headers={"X-API-Key": ""}
    )
    assert missing.status_code == 401
    wrong = client.get(
        f"/v1/forecast/{sku}",
        params={"horizon": 7, "quantiles": "0.5"},
        headers={"X-API-Key": "not-a-key"},
    )
    assert wrong.status_code == 403
    # parameters the lane does not take plainly reach the route and its validation
    assert client.get(f"/v1/forecast/{sku}", params={"horizon": "x"}).status_code == 422
    assert client.get(f"/v1/forecast/{sku}", params={"quantiles": "2"}).status_code == 422
    with pytest.raises(AssertionError, match="route was called"):
        client.get(f"/v1/forecast/{sku}", params={"horizon": 6, "quantiles": "0.5"})
