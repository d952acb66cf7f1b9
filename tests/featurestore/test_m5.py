"""The M5 importer: the frames it builds and a full m5_tiny import, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text

from featurestore.ingest import import_m5
from featurestore.m5 import m5_frames


@pytest.fixture(scope="module")
def raw(m5_path: Path) -> pd.DataFrame:
    return pq.read_table(m5_path).to_pandas()


@pytest.fixture(scope="module")
def frames(m5_path: Path) -> dict[str, pd.DataFrame]:
    return m5_frames(m5_path)


def test_products_are_items_in_stores(frames: dict[str, pd.DataFrame], raw: pd.DataFrame) -> None:
    products = frames["products"]
    assert len(products) == raw.groupby(["item_id", "store_id"]).ngroups == 280
    one = products.set_index("sku").loc["HOBBIES_1_330_CA_1"]
    assert (one.item_id, one.department, one.category, one.store, one.region) == (
        "HOBBIES_1_330",
        "HOBBIES_1",
        "HOBBIES",
        "CA_1",
        "US-CA",
    )


def test_sales_keep_every_day_and_unit(frames: dict[str, pd.DataFrame], raw: pd.DataFrame) -> None:
    sales = frames["sales"]
    assert len(sales) == len(raw) == 535_640
    assert sales["units"].sum() == raw["value"].sum()
    priced = sales["avg_price"].notna()
    assert priced.sum() == raw["sell_price"].notna().sum()


def test_prices_are_one_row_per_change_from_the_week_start(
    frames: dict[str, pd.DataFrame], raw: pd.DataFrame
) -> None:
    prices = frames["prices"]
    assert not prices.duplicated(["sku", "valid_from"]).any()
    week_start = pd.to_datetime(raw["date"]).groupby(raw["wm_yr_wk"]).min()
    assert set(pd.to_datetime(prices["valid_from"])) <= set(week_start)
    for _, group in prices.groupby("sku"):
        assert (np.diff(group["price"].to_numpy()) != 0).all()
    # rebuilding the weekly series from the change rows gives the file's prices back
    sku = "HOBBIES_1_330_CA_1"
    mine = raw[(raw["item_id"] == "HOBBIES_1_330") & (raw["store_id"] == "CA_1")]
    days = pd.to_datetime(mine["date"]).to_numpy()
    changes = prices[prices["sku"] == sku].sort_values("valid_from")
    at = np.searchsorted(pd.to_datetime(changes["valid_from"]).to_numpy(), days, side="right") - 1
    rebuilt = changes["price"].to_numpy()[at]
    on_sale = mine["sell_price"].notna().to_numpy()
    assert np.allclose(rebuilt[on_sale], mine["sell_price"].to_numpy()[on_sale])


def test_events_and_snap_days(frames: dict[str, pd.DataFrame], raw: pd.DataFrame) -> None:
    events = frames["events"]
    named = events[events["kind"] != "snap"]
    assert set(named["region"]) == {"US"}
    assert set(named["kind"]) == {k.lower() for k in raw["event_type_1"].unique() if k}
    assert "SuperBowl" in set(named["name"]) and "Easter" in set(named["name"])
    snap = events[events["kind"] == "snap"]
    assert set(snap["name"]) == {"SNAP"} and set(snap["region"]) == {"US-CA", "US-TX", "US-WI"}
    expected = raw.loc[raw["snap"] == 1, ["date", "state_id"]].drop_duplicates()
    assert len(snap) == len(expected)


def test_import_totals_equal_the_source(
    engine: Engine, m5_path: Path, raw: pd.DataFrame, frames: dict[str, pd.DataFrame]
) -> None:
    started = time.perf_counter()
    reports = import_m5(engine, m5_path)
    seconds = time.perf_counter() - started
    assert {e: r.status for e, r in reports.items()} == dict.fromkeys(
        ("products", "events", "prices", "sales"), "loaded"
    )
    assert all(r.rows_rejected == 0 for r in reports.values())
    with engine.connect() as conn:
        skus, days, units = conn.execute(
            text("SELECT count(DISTINCT sku), count(*), sum(units) FROM daily_sales")
        ).one()
        counts = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("products", "prices", "calendar_events")
        }
        first_last = conn.execute(
            text("SELECT sku, first_sale_date, last_sale_date FROM products")
        ).all()
    assert (skus, days, units) == (280, len(raw), float(raw["value"].sum()))
    assert counts == {
        "products": 280,
        "prices": len(frames["prices"]),
        "calendar_events": len(frames["events"]),
    }
    sold = frames["sales"][frames["sales"]["units"] > 0].groupby("sku")["date"].agg(["min", "max"])
    assert {s: (str(f), str(la)) for s, f, la in first_last} == {
        s: (str(r["min"].date()), str(r["max"].date())) for s, r in sold.iterrows()
    }
    print(f"m5_tiny import on {engine.dialect.name}: {seconds:.1f} s")
    again = import_m5(engine, m5_path)
    assert {r.status for r in again.values()} == {"unchanged"}
    with engine.connect() as conn:
        loaded = conn.execute(
            text("SELECT count(*) FROM ingestion_log WHERE status = 'loaded'")
        ).scalar_one()
    assert loaded == 4
