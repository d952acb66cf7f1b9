"""The real-shop traits preset: order lines with paid prices and each trait actually present."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from featurestore.ingest import ingest_frames
from featurestore.readers import read_frame
from featurestore.schema import ENTITIES
from training.synth import TraitsExport, traits_config, traits_export
from training.synth.traits import CLOSURE

CONFIG = traits_config(n_skus=60)


@pytest.fixture(scope="module")
def export() -> TraitsExport:
    return traits_export(CONFIG)


def _daily(export: TraitsExport) -> pd.DataFrame:
    lines = export.order_lines
    day = lines["ordered_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    return lines.assign(date=day).groupby(["sku", "date"], as_index=False)["quantity"].sum()


def test_columns_are_the_entities_and_no_price_file(export: TraitsExport) -> None:
    for frame, name in ((export.products, "products"), (export.order_lines, "orders")):
        allowed = {c.name for c in ENTITIES[name].columns}
        assert set(frame.columns) <= allowed, name
        assert set(ENTITIES[name].required) <= set(frame.columns), name
    assert not export.order_lines.duplicated(["order_id", "line"]).any()
    # What a shop sends: no prices, promotions or events, and no stock flags or statuses.
    assert not hasattr(export, "prices") and export.facts["price files"] == 0
    assert "status" not in export.products and "in_stock" not in export.order_lines


def test_deterministic(export: TraitsExport) -> None:
    again = traits_export(CONFIG)
    pd.testing.assert_frame_equal(export.order_lines, again.order_lines)
    pd.testing.assert_frame_equal(export.products, again.products)


def test_one_year_and_paid_prices_that_vary(export: TraitsExport) -> None:
    days = _daily(export)["date"]
    assert (days.max() - days.min()).days + 1 <= 365
    assert days.max() == pd.Timestamp(CONFIG.last_day())
    # Paid prices: a SKU's lines carry several prices (promotions, price changes).
    per_sku = export.order_lines.groupby("sku")["unit_price"].nunique()
    assert (per_sku > 1).mean() > 0.5


def test_closure_week_has_no_lines(export: TraitsExport) -> None:
    first, n = CLOSURE
    closed = pd.date_range(first, periods=n, freq="D")
    daily = _daily(export)
    assert export.facts["closure days"] == n
    assert not daily["date"].isin(closed).any()
    # The days around it do sell.
    assert daily["date"].isin([closed[0] - pd.Timedelta(days=1)]).any()
    assert daily["date"].isin([closed[-1] + pd.Timedelta(days=1)]).any()


def _longest_zero_run(row: np.ndarray) -> int:
    """Longest run of zeros between a row's first and last sale (launch and end left out)."""
    sold = np.flatnonzero(row)
    best = run = 0
    for value in row[sold[0] : sold[-1] + 1]:
        run = run + 1 if value == 0 else 0
        best = max(best, run)
    return best


def test_stockout_runs_show_as_zero_runs_of_regular_sellers(export: TraitsExport) -> None:
    assert export.facts["stock-out runs"] >= CONFIG.n_skus  # ~6 per regular SKU and year
    daily = _daily(export)
    wide = daily.pivot(index="sku", columns="date", values="quantity").fillna(0.0)
    regular = wide[wide.mean(axis=1) >= 3.0]
    assert len(regular) >= 5
    # Three zero days at a rate of >= 3 a day (chance ~e^-9) do not happen by chance: a
    # stock-out. Most regular sellers have one (the closure week aside: it is dropped here).
    first, n = CLOSURE
    closed = pd.date_range(first, periods=n, freq="D")
    open_days = regular.loc[:, ~regular.columns.isin(closed)].to_numpy()
    runs = [_longest_zero_run(row) for row in open_days]
    assert sum(r >= 3 for r in runs) >= len(regular) // 2


def test_bulk_orders_far_outside_the_distribution(export: TraitsExport) -> None:
    lines = export.order_lines
    n_bulk = export.facts["bulk lines"]
    assert n_bulk >= 3
    per_sku = lines.groupby("sku")["quantity"]
    ratio = lines["quantity"] / per_sku.transform("median")
    assert (ratio >= 20).sum() >= n_bulk


def test_launches_and_discontinued(export: TraitsExport) -> None:
    daily = _daily(export)
    start, end = daily["date"].min(), daily["date"].max()
    first = daily.groupby("sku")["date"].min()
    last = daily.groupby("sku")["date"].max()
    launched = int((first > start + pd.Timedelta(days=28)).sum())
    ended = int((last < end - pd.Timedelta(days=28)).sum())
    assert launched >= 3 and ended >= 3
    assert export.facts["launched SKUs"] == launched
    assert export.facts["discontinued SKUs"] == ended


def test_ingests_as_an_export(engine: Engine) -> None:
    small = traits_export(traits_config(n_skus=12, n_days=120, end=dt.date(2026, 1, 15)))
    ingest_frames(engine, "products", small.products, source="traits:products")
    report = ingest_frames(engine, "orders", small.order_lines, source="traits:orders")
    assert report.rows_rejected == 0
    frame = read_frame(engine)
    assert frame["units"].sum() == pytest.approx(small.order_lines["quantity"].sum())
    first, n = CLOSURE
    closed = frame["date"].between(
        pd.Timestamp(first), pd.Timestamp(first) + pd.Timedelta(days=n - 1)
    )
    assert closed.any() and frame.loc[closed, "units"].sum() == 0
