"""The in-memory catalogue window: the same frames and forecasts as the SQL read, and fresh."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import select, update

from app.services.champion import ChampionHolder
from app.services.forecasting import ForecastService
from featurestore.readers import last_sales_date, latest_window, read_events, read_products
from featurestore.tables import DailySales
from featurestore.window_cache import ROW_BYTES, CatalogueWindow
from tests.app.conftest import Served


def _skus(served: Served) -> list[str]:
    return sorted(read_products(served.engine)["sku"])


def _service(served: Served, **kwargs: object) -> ForecastService:
    holder = ChampionHolder(served.registry)
    holder.current()
    return ForecastService(served.engine, holder, [0.1, 0.5, 0.9], use_cache=False, **kwargs)  # type: ignore[arg-type]


def test_window_slices_equal_the_sql_read(served: Served) -> None:
    """Any subset of SKUs and any horizon up to the window's: the reader's frame, exactly."""
    as_of = last_sales_date(served.engine)
    assert as_of is not None
    events = read_events(served.engine)
    n_days, horizon = 120, 14
    window = CatalogueWindow.read(served.engine, n_days, horizon, as_of, events)
    skus = _skus(served)
    assert window.nbytes >= len(window.day) * ROW_BYTES
    subsets = [skus, skus[:1], skus[3:9], skus[::-1][:5] + skus[:2], [*skus[:2], "NOPE"], []]
    for subset in subsets:
        for h in (0, 1, 7, horizon):
            ref = latest_window(
                served.engine, subset, n_days=n_days, horizon=h, as_of=as_of, events=events
            )
            got = window.frame(subset, h)
            if ref.empty:
                assert got.empty
                continue
            pd.testing.assert_frame_equal(got, ref, check_exact=True)
    with pytest.raises(ValueError, match="outside"):
        window.frame(skus, horizon + 1)


def test_window_path_answers_what_the_sql_path_answers(served: Served) -> None:
    cached = _service(served)
    sql = _service(served, window_bytes=0)
    tiny = _service(served, window_bytes=1)  # the catalogue does not fit: SQL read
    skus = [s for s in _skus(served) if _forecastable(served, s)]
    for want in (skus, skus[:1], skus[2:5]):
        for horizon in (None, 5):
            body = cached.forecast_json(want, horizon)
            assert body == sql.forecast_json(want, horizon)
            assert body == tiny.forecast_json(want, horizon)
    assert cached.snapshot().window is not None
    assert sql.snapshot().window is None and tiny.snapshot().window is None


def _forecastable(served: Served, sku: str) -> bool:
    products = read_products(served.engine, [sku])
    return bool((products["status"] == "active").all())


def test_new_sales_change_the_computed_forecast_after_the_token_check(served: Served) -> None:
    """An ingestion of sales for a SKU inside the window: trusted window until the token is
    checked, then re-read, and the forecast is what the SQL read gives for the new data."""
    from featurestore.ingest import ingest_frames

    service = _service(served, token_ttl=3600.0)
    sku = next(s for s in _skus(served) if _forecastable(served, s))
    as_of = last_sales_date(served.engine)
    assert as_of is not None
    day = as_of - dt.timedelta(days=2)
    before = service.forecast_json([sku])
    window = service.snapshot().window
    assert window is not None
    key = (DailySales.sku == sku) & (DailySales.date == day)
    columns = [DailySales.units, DailySales.revenue, DailySales.avg_price, DailySales.on_promotion]
    with served.engine.connect() as conn:
        original = conn.execute(select(*columns).where(key)).one()
    sales = pd.DataFrame({"sku": [sku], "date": [day], "units": [float(original[0]) + 250.0]})
    ingest_frames(served.engine, "sales", [sales], source="test-window-cache")
    try:
        # Within the TTL the worker trusts its token, so its window, as for cached answers.
        assert service.forecast_json([sku]) == before
        service.history.token_ttl = 0.0
        after = service.forecast_json([sku])
        assert after != before
        assert service.snapshot().window is not window
        assert after == _service(served, window_bytes=0).forecast_json([sku])
    finally:
        with served.engine.begin() as conn:
            conn.execute(
                update(DailySales).where(key).values(dict(zip(columns, original, strict=True)))
            )


@pytest.mark.parametrize("model", ["champion", "seasonal_naive"])
def test_column_arrays_forecast_as_the_frame_does(served: Served, model: str) -> None:
    """forecast_arrays on the window's column arrays equals it on the frame (staged models use
    the arrays directly, the others a frame made from them)."""
    from types import SimpleNamespace

    import numpy as np

    from training.forecaster import Forecaster
    from training.pipeline import load_history
    from training.predict import BundleForecaster

    champion = served.registry.load_champion()
    artifacts = dict(champion.artifacts)
    if model != "champion":
        history, products = load_history(served.engine)
        artifacts["model"] = Forecaster(model=model, horizon=14).fit(history, products)
        artifacts.pop("selection", None)  # the swapped-in model serves alone
    fc = BundleForecaster(SimpleNamespace(artifacts=artifacts))  # type: ignore[arg-type]
    as_of = last_sales_date(served.engine)
    assert as_of is not None
    window = CatalogueWindow.read(served.engine, fc.history_days, 14, as_of)
    skus = [s for s in _skus(served) if _forecastable(served, s)]
    products = read_products(served.engine, skus)
    got = fc.forecast_arrays(window.columns(skus, 14), products, as_of, 14, [0.1, 0.9])
    ref = fc.forecast_arrays(window.frame(skus, 14), products, as_of, 14, [0.1, 0.9])
    for name in ("sku", "day", "horizon", "mean", "quantiles", "cold_start"):
        assert np.array_equal(getattr(got, name), getattr(ref, name)), name
