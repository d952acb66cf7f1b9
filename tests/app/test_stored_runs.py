"""Stored forecast-all runs answer only for today's data and champion; none is dated after it."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from app.errors import AsOfAfterData
from app.services.batch import run_forecast_all
from featurestore import forecast_runs
from featurestore.readers import last_sales_date, read_products
from tests.app.conftest import Served


def _skus(served: Served) -> list[str]:
    products = read_products(served.engine)
    return sorted(products.loc[products["status"] == "active", "sku"])


def test_a_back_dated_run_is_never_the_current_forecast(client: TestClient, served: Served) -> None:
    last = last_sales_date(served.engine)
    assert last is not None
    old = last - dt.timedelta(days=28)
    run_forecast_all(served.engine, served.registry, as_of=old, horizon=14)
    skus = _skus(served)
    # the run's own quantiles (the defaults) and others: both from the last sales day
    for params in ({}, {"quantiles": "0.2,0.8"}):
        body = client.get(f"/v1/forecast/{skus[0]}", params=params).json()
        assert body["data_until"] == last.isoformat(), params
        assert body["forecasts"][0]["days"][0]["date"] == (last + dt.timedelta(1)).isoformat()
    batch = client.post("/v1/forecast", json={"skus": skus[:4]}).json()
    assert batch["data_until"] == last.isoformat()
    # a current run made before the back-dated one stays the export's run
    current = run_forecast_all(served.engine, served.registry, horizon=14)
    run_forecast_all(served.engine, served.registry, as_of=old, horizon=14)
    export = client.get("/v1/forecasts", params={"limit": 2})
    assert export.headers["X-Run-Id"] == current.run_id
    assert export.headers["X-As-Of"] == last.isoformat()


def test_the_current_run_answers_without_computing(client: TestClient, served: Served) -> None:
    from app.observability import FORECASTS

    run_forecast_all(served.engine, served.registry, horizon=14)
    computed = FORECASTS.labels("computed")._value.get()
    body = client.get(f"/v1/forecast/{_skus(served)[1]}").json()
    assert FORECASTS.labels("computed")._value.get() == computed
    assert body["data_until"] == last_sales_date(served.engine).isoformat()


def test_an_as_of_after_the_data_is_refused(client: TestClient, served: Served) -> None:
    last = last_sales_date(served.engine)
    assert last is not None
    before = forecast_runs.latest_run(served.engine)
    for future in (last + dt.timedelta(days=1), dt.date(2030, 1, 1)):
        with pytest.raises(AsOfAfterData, match=f"as-of {future} is after the last sales day"):
            run_forecast_all(served.engine, served.registry, as_of=future, horizon=14)
    after = forecast_runs.latest_run(served.engine)
    assert (after and after.run_id) == (before and before.run_id)


def test_a_run_dated_after_the_data_is_never_served(client: TestClient, served: Served) -> None:
    """A future run stored before the refusal existed stays unserved, by GET and by export."""
    from training.predict import quantile_column

    last = last_sales_date(served.engine)
    assert last is not None
    current = run_forecast_all(served.engine, served.registry, horizon=14)
    frame = current.frame.copy()
    frame["date"] = frame["date"] + (dt.date(2030, 1, 1) - last)
    frame["mean"] = 0.07
    from featurestore.stats import data_token

    forecast_runs.save_run(
        served.engine,
        frame,
        model_version=current.model_version,
        as_of=dt.date(2030, 1, 1),
        data_token=data_token(served.engine),
        horizon=14,
        quantiles=[0.1, 0.5, 0.9],
        quantile_columns=[quantile_column(q) for q in (0.1, 0.5, 0.9)],
    )
    body = client.get(f"/v1/forecast/{_skus(served)[2]}").json()
    assert body["data_until"] == last.isoformat()
    assert body["forecasts"][0]["days"][0]["mean"] != pytest.approx(0.07)
    export = client.get("/v1/forecasts", params={"limit": 2})
    assert export.headers["X-Run-Id"] == current.run_id
