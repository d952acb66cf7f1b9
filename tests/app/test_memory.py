"""What a worker keeps in memory stays bounded across promotes, data loads and traffic.

The soak (bench/soak.py, docs/benchmarks.md) measures the RSS; these tests hold the reasons it
can stay flat: a swapped-out champion is freed, and the forecast cache never keeps entries of an
older champion or data token beside the current ones.
"""

from __future__ import annotations

import datetime as dt
import gc
import re
import weakref

from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from app.main import create_app
from app.services.forecast_cache import CachedForecast, ForecastCache
from tests.app.conftest import OPS_KEY, READ_KEY, Served, small_options
from tests.app.test_api import _skus
from training.pipeline import train

DAY = dt.date(2026, 1, 1)


def _entry(n: int) -> CachedForecast:
    return CachedForecast(DAY, b"x" * n)


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert match is not None, name
    return float(match.group(1))


def test_a_new_champion_or_token_drops_the_older_entries() -> None:
    cache = ForecastCache(create_engine("sqlite://"))
    levels = (0.1, 0.9)
    for sku in ("A", "B", "C"):
        cache.remember((sku, "v1", "t1", 28, levels), _entry(100))
    cache.remember(("A", "v1", "t1", 14, levels), _entry(50))
    assert len(cache.entries) == 4 and cache.nbytes == 350

    cache.remember(("A", "v2", "t1", 28, levels), _entry(70))  # a promote
    assert list(cache.entries) == [("A", "v2", "t1", 28, levels)]
    assert cache.nbytes == 70 and cache.keys == {"A": {("A", "v2", "t1", 28, levels)}}

    cache.remember(("B", "v2", "t2", 28, levels), _entry(30))  # a file load
    assert list(cache.entries) == [("B", "v2", "t2", 28, levels)] and cache.nbytes == 30

    cache.remember(("B", "v2", "t2", 28, levels), _entry(40))  # the same key again
    assert cache.drop(["B"]) == 1
    assert cache.entries == {} and cache.nbytes == 0 and cache.keys == {}


def test_the_lru_bound_keeps_the_byte_count_right() -> None:
    cache = ForecastCache(create_engine("sqlite://"), size=2)
    for i, sku in enumerate(("A", "B", "C")):
        cache.remember((sku, "v1", "t1", 28, ()), _entry(10 * (i + 1)))
    assert [k[0] for k in cache.entries] == ["B", "C"] and cache.nbytes == 50
    assert set(cache.keys) == {"B", "C"}


def test_a_promote_frees_the_old_champion_and_its_cache(served: Served) -> None:
    other = train(served.engine, served.settings.models_dir, small_options()).version
    try:
        with TestClient(create_app(served.settings)) as client:
            client.headers["X-API-Key"] = READ_KEY
            holder = client.app.state.champion  # type: ignore[attr-defined]
            forecasts = client.app.state.forecasts  # type: ignore[attr-defined]
            sku = _skus(served)[0]
            first = holder.current()
            assert first is not None and first.version == served.version
            bundle, forecaster = weakref.ref(first.bundle), weakref.ref(first.forecaster)
            del first
            answer = client.get(f"/v1/forecast/{sku}")
            assert answer.status_code == 200, answer.text
            before = {k[1] for k in forecasts.cache.entries}
            assert before == {served.version}

            ops = {"X-API-Key": OPS_KEY}
            assert client.post(f"/v1/models/{other}/promote", headers=ops).status_code == 200
            assert client.get(f"/v1/forecast/{sku}").status_code == 200
            gc.collect()
            assert bundle() is None and forecaster() is None, "the old champion is still held"
            assert {k[1] for k in forecasts.cache.entries} == {other}
            metrics = client.get("/metrics").text
            assert _gauge(metrics, "salesfc_forecast_cache_entries") == len(forecasts.cache.entries)
            assert _gauge(metrics, "salesfc_forecast_cache_bytes") == forecasts.cache.nbytes > 0
    finally:
        served.registry.promote(served.version, reason="test: back to the fixture's champion")
