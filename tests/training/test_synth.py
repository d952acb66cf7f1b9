"""The synthetic catalogue: deterministic by seed, shaped like retail, loadable on both backends."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from featurestore.calendar import holiday_events
from featurestore.schema import ENTITIES, ORDER_STATUSES, PRODUCT_STATUSES
from featurestore.stats import store_stats
from training.synth import (
    BLOCK_SKUS,
    SynthCatalogue,
    SynthConfig,
    generate,
    iter_order_lines,
    iter_sales,
    write_catalogue,
)

END = dt.date(2025, 6, 30)
CONFIG = SynthConfig(n_skus=120, n_days=730, end=END, seed=7)


@pytest.fixture(scope="module")
def cat() -> SynthCatalogue:
    return generate(CONFIG)


def _regular(cat: SynthCatalogue) -> pd.DataFrame:
    """Sales of SKUs that are neither intermittent nor closed that day, with product attributes."""
    sales = cat.sales.merge(cat.products[["sku", "region", "category"]], on="sku")
    means = sales.groupby("sku")["units"].transform("mean")
    return sales[(means >= 1.0) & sales["in_stock"]]


def test_deterministic_by_seed(cat: SynthCatalogue) -> None:
    again = generate(CONFIG)
    for name in ("products", "sales", "prices", "promotions", "events"):
        pd.testing.assert_frame_equal(getattr(cat, name), getattr(again, name))
    other = generate(SynthConfig(n_skus=120, n_days=730, end=END, seed=8))
    assert not cat.sales["units"].equals(other.sales["units"])


def test_columns_are_the_entity_contract(cat: SynthCatalogue) -> None:
    for name in ("products", "sales", "prices", "promotions", "events"):
        frame = getattr(cat, name)
        entity = ENTITIES[name]
        allowed = {c.name for c in entity.columns}
        assert set(frame.columns) <= allowed, name
        assert set(entity.required) <= set(frame.columns), name
        assert not frame.duplicated(list(entity.key)).any(), name
        for col in entity.columns:
            if col.max_length and col.name in frame:
                assert frame[col.name].dropna().str.len().max() <= col.max_length, (name, col)
    assert len(cat.products) == CONFIG.n_skus
    assert set(cat.products["status"]) <= set(PRODUCT_STATUSES)
    assert len(set(cat.products["store"])) >= 4
    assert {"US-CA", "US-TX", "US-NY", "DE-BY"} <= set(cat.products["region"])


def test_units_are_nonnegative_integers_within_the_window(cat: SynthCatalogue) -> None:
    units = cat.sales["units"].to_numpy()
    assert units.min() >= 0
    assert np.array_equal(units, np.round(units))
    assert cat.sales["date"].max() == pd.Timestamp(END)
    assert cat.sales["date"].min() == pd.Timestamp(CONFIG.first_day())
    assert (cat.sales["avg_price"] > 0).all()
    assert np.allclose(cat.sales["revenue"], cat.sales["units"] * cat.sales["avg_price"], atol=0.01)
    assert (cat.sales.loc[~cat.sales["in_stock"], "units"] == 0).all()


def test_fast_and_slow_movers(cat: SynthCatalogue) -> None:
    per_sku = cat.sales.groupby("sku")["units"]
    zero_share = per_sku.apply(lambda u: float((u == 0).mean()))
    means = per_sku.mean()
    assert (zero_share > 0.7).mean() >= 0.2  # intermittent slow movers: mostly zeros
    assert means.max() > 8 * means.median()  # log-normal levels: a few fast movers


def test_weekly_profile(cat: SynthCatalogue) -> None:
    sales = _regular(cat)
    dow = sales["date"].dt.day_of_week
    us = sales["region"].str.startswith("US")
    by_day = sales[us].groupby(dow[us])["units"].mean()
    assert by_day[5] > 1.25 * by_day[1]  # Saturday well above Tuesday
    de_sundays = sales[~us & (dow == 6)]
    assert len(de_sundays) > 0
    assert de_sundays["units"].sum() == 0  # Bavarian shops are closed on Sundays


def test_yearly_season_by_category(cat: SynthCatalogue) -> None:
    sales = _regular(cat)
    garden = sales[sales["category"] == "GARDEN"]
    month = garden["date"].dt.month
    assert (
        garden[month.isin([4, 5, 6])]["units"].mean()
        > 1.5 * garden[month.isin([11, 12, 1])]["units"].mean()
    )


def test_christmas_day_near_zero_with_a_peak_before(cat: SynthCatalogue) -> None:
    daily = cat.sales.groupby("date")["units"].sum()
    xmas = daily[pd.Timestamp("2024-12-25")]
    before = daily[pd.Timestamp("2024-12-16") : pd.Timestamp("2024-12-23")].mean()
    november = daily[pd.Timestamp("2024-11-01") : pd.Timestamp("2024-11-20")].mean()
    assert xmas < 0.1 * november
    assert before > 1.15 * november


def test_higher_price_fewer_units(cat: SynthCatalogue) -> None:
    sales = _regular(cat)
    sales = sales[~sales["on_promotion"]]  # avg_price is then the shelf price
    rel_price = sales["avg_price"] / sales.groupby("sku")["avg_price"].transform("median")
    rel_units = sales["units"] / sales.groupby("sku")["units"].transform("mean")
    cheap = rel_units[rel_price < 0.9].mean()
    normal = rel_units[(rel_price > 0.97) & (rel_price < 1.03)].mean()
    dear = rel_units[rel_price > 1.05].mean()
    assert cheap > 1.2 * normal
    assert dear < normal
    slope = np.polyfit(np.log(rel_price), rel_units, 1)[0]
    assert slope < -1.0


def test_promotions_lift_sales(cat: SynthCatalogue) -> None:
    sales = _regular(cat)
    mean_on = sales[sales["on_promotion"]].groupby("sku")["units"].mean()
    mean_off = sales[~sales["on_promotion"]].groupby("sku")["units"].mean()
    lift = (mean_on / mean_off).dropna()
    assert len(lift) > 20
    assert lift.median() > 1.3
    promos = cat.promotions
    assert promos["discount_depth"].between(0.05, 0.6).all()
    assert (promos["end_date"] >= promos["start_date"]).all()
    assert promos["display"].any() and promos["mailer"].any()
    assert promos["sku"].isna().any()  # category-wide sales too


def test_launches_start_late_and_discontinued_stop(cat: SynthCatalogue) -> None:
    products = cat.products.set_index("sku")
    span = cat.sales.groupby("sku")["date"].agg(["min", "max"])
    launched = products["launch_date"].notna()
    assert launched.sum() >= 5
    first_day = pd.Timestamp(CONFIG.first_day())
    late = span.loc[launched[launched].index, "min"]
    assert (late == products.loc[launched, "launch_date"]).all()
    assert (late > first_day + pd.Timedelta(days=60)).all()
    assert (span.loc[launched[~launched].index, "min"] == first_day).all()
    gone = products["status"] == "discontinued"
    assert gone.sum() >= 5
    assert (span.loc[gone[gone].index, "max"] < pd.Timestamp(END) - pd.Timedelta(days=30)).all()
    assert (span.loc[gone[~gone].index, "max"] == pd.Timestamp(END)).all()
    last_price = cat.prices.groupby("sku")["valid_from"].max()
    assert (last_price[gone[gone].index] <= span.loc[gone[gone].index, "max"]).all()


def test_planned_future_prices_and_promotions(cat: SynthCatalogue) -> None:
    end = pd.Timestamp(END)
    assert (cat.prices["valid_from"] > end).sum() >= 5
    assert (cat.promotions["start_date"] > end).sum() >= 20
    assert (cat.events["date"] > end).any()
    first_prices = cat.prices.groupby("sku")["valid_from"].min()
    first_sales = cat.sales.groupby("sku")["date"].min()
    assert (first_prices <= first_sales).all()


def test_custom_events(cat: SynthCatalogue) -> None:
    names = set(cat.events["name"])
    assert {"Payday", "Super Bowl", "Cup Final"} <= names
    paydays = cat.events[cat.events["name"] == "Payday"]
    assert (paydays["date"].dt.day == 1).all()
    assert len(paydays) >= 24


def test_iter_sales_streams_the_same_rows() -> None:
    cfg = SynthConfig(n_skus=BLOCK_SKUS + 40, n_days=40, end=END, seed=3)
    blocks = list(iter_sales(cfg))
    assert len(blocks) == 2
    pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), generate(cfg).sales)


@pytest.mark.parametrize("bad", [{"n_skus": 0}, {"n_days": 0}])
def test_rejects_empty_config(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate(SynthConfig(**bad))  # type: ignore[arg-type]


def test_order_lines() -> None:
    skus = [f"SKU{i}" for i in range(50)]
    start, end = dt.date(2025, 1, 1), dt.date(2025, 3, 31)

    def lines() -> pd.DataFrame:
        chunks = list(
            iter_order_lines(25_000, seed=5, skus=skus, start=start, end=end, chunk_rows=10_000)
        )
        assert [len(c) for c in chunks] == [10_000, 10_000, 5_000]
        return pd.concat(chunks, ignore_index=True)

    frame = lines()
    pd.testing.assert_frame_equal(frame, lines())
    entity = ENTITIES["orders"]
    assert list(frame.columns) == [c.name for c in entity.columns if c.name != "customer_id"]
    assert not frame.duplicated(["order_id", "line"]).any()
    assert set(frame["status"]) == set(ORDER_STATUSES)
    assert set(frame["sku"]) <= set(skus)
    negative = frame["quantity"] < 0
    assert negative.any()
    assert (frame.loc[negative, "status"] == "returned").all()
    assert ((frame["status"] == "returned") & ~negative).any()
    assert frame["ordered_at"].min() >= pd.Timestamp(start, tz="UTC")
    assert frame["ordered_at"].max() < pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)
    assert frame["ordered_at"].is_monotonic_increasing
    assert (frame["line"] >= 1).all()
    assert (frame.groupby("order_id")["line"].min() == 1).all()


def test_order_lines_carry_customer_ids_only_when_asked() -> None:
    skus = [f"SKU{i}" for i in range(10)]
    kwargs = {"seed": 5, "skus": skus, "start": dt.date(2025, 1, 1), "end": dt.date(2025, 1, 31)}
    plain = pd.concat(iter_order_lines(2_000, **kwargs))  # type: ignore[arg-type]
    with_ids = pd.concat(iter_order_lines(2_000, customer_ids=True, **kwargs))  # type: ignore[arg-type]
    assert list(with_ids.columns) == [c.name for c in ENTITIES["orders"].columns]
    assert with_ids["customer_id"].notna().all()
    pd.testing.assert_frame_equal(with_ids.drop(columns="customer_id"), plain)


def test_order_lines_of_another_period_have_their_own_order_numbers() -> None:
    skus = [f"SKU{i}" for i in range(20)]
    first = pd.concat(
        iter_order_lines(
            5_000, seed=5, skus=skus, start=dt.date(2024, 1, 1), end=dt.date(2024, 12, 31)
        )
    )
    later = pd.concat(
        iter_order_lines(
            5_000,
            seed=6,
            skus=skus,
            start=dt.date(2025, 1, 1),
            end=dt.date(2025, 12, 31),
            first_order=1_000_001,
        )
    )
    assert set(first["order_id"]).isdisjoint(later["order_id"])
    assert later["order_id"].str[2:].astype(int).min() >= 1_000_001
    assert first["order_id"].str[2:].astype(int).min() == 1


def test_write_catalogue_loads_through_ingestion(engine: Engine) -> None:
    small = generate(SynthConfig(n_skus=15, n_days=120, end=END, seed=11))
    seen: list[str] = []
    reports = write_catalogue(engine, small, progress=lambda entity, _r: seen.append(entity))
    assert seen == ["products", "events", "prices", "promotions", "sales"]
    for entity, report in reports.items():
        frame = getattr(small, entity)
        assert (report.status, report.rows_rejected) == ("loaded", 0), (entity, report.reasons)
        assert report.rows_accepted == len(frame), entity

    stats = store_stats(engine)
    tables = stats["tables"]
    assert stats["skus"] == len(small.products)
    assert tables["daily_sales"] == len(small.sales)
    assert tables["prices"] == len(small.prices)
    assert tables["promotions"] == len(small.promotions)
    assert stats["total_units"] == pytest.approx(float(small.sales["units"].sum()))
    assert stats["first_sales_date"] == small.config.first_day().isoformat()
    assert stats["last_sales_date"] == END.isoformat()
    # custom events plus the regions' public holidays over the sales window and a year after it
    holidays = holiday_events(
        small.products["region"], small.config.first_day(), END + dt.timedelta(days=366)
    )
    assert tables["calendar_events"] == len(small.events) + len(holidays)

    again = write_catalogue(engine, small)
    assert {r.status for r in again.values()} == {"unchanged"}
    after = store_stats(engine)
    for figures in (after, stats):  # each load, unchanged or not, is logged
        figures["tables"].pop("ingestion_log")
    assert after == stats
