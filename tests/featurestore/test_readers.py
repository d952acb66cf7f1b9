"""Point-in-time readers on SQLite and PostgreSQL, from fixture rows inserted directly."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, insert, update

from featurestore import read_statements
from featurestore.readers import (
    last_sales_date,
    latest_window,
    read_events,
    read_frame,
    read_products,
)
from featurestore.schema import HISTORY_COLUMNS, HISTORY_FLAGS, PRODUCT_COLUMNS
from featurestore.tables import CalendarEvent, DailySales, Price, Product, Promotion

D0 = date(2024, 3, 1)


def d(n: int) -> date:
    return D0 + timedelta(days=n)


def add(engine: Engine, table: Any, rows: list[dict[str, Any]]) -> None:
    # One executemany per key set: rows leaving a column out keep its default.
    shapes: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        shapes.setdefault(frozenset(row), []).append(row)
    with engine.begin() as conn:
        for group in shapes.values():
            conn.execute(insert(table), group)


def product(sku: str, **kw: Any) -> dict[str, Any]:
    return {"sku": sku, "category": "FOODS", "region": "US-CA", **kw}


def sale(sku: str, day: int, units: float, **kw: Any) -> dict[str, Any]:
    return {"sku": sku, "date": d(day), "units": units, "source": "direct", **kw}


def series(frame: pd.DataFrame, sku: str, column: str) -> list[Any]:
    return frame.loc[frame["sku"] == sku, column].tolist()


def dates(frame: pd.DataFrame, sku: str) -> list[date]:
    return [t.date() for t in frame.loc[frame["sku"] == sku, "date"]]


def assert_contract(frame: pd.DataFrame) -> None:
    assert {c: str(t) for c, t in frame.dtypes.items()} == {**HISTORY_COLUMNS, **HISTORY_FLAGS}
    assert isinstance(frame.index, pd.RangeIndex)
    assert all(type(s) is str for s in frame["sku"])
    ordered = frame.sort_values(["sku", "date"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, ordered)


def test_empty_store_gives_an_empty_frame_with_the_contract(engine: Engine) -> None:
    frame = read_frame(engine)
    assert frame.empty
    assert {c: str(t) for c, t in frame.dtypes.items()} == {**HISTORY_COLUMNS, **HISTORY_FLAGS}
    assert last_sales_date(engine) is None
    assert latest_window(engine, None, 7).empty


def test_dense_rows_with_zeros_from_first_sale_to_as_of(engine: Engine) -> None:
    add(engine, Product, [product("B"), product("A")])
    add(engine, DailySales, [sale("A", 1, 3), sale("A", 3, 5), sale("B", 2, 0), sale("B", 5, 2)])

    frame = read_frame(engine)

    assert_contract(frame)
    assert last_sales_date(engine) == d(5)
    assert dates(frame, "A") == [d(i) for i in range(1, 6)]
    assert series(frame, "A", "units") == [3, 0, 5, 0, 0]
    assert dates(frame, "B") == [d(i) for i in range(2, 6)]
    assert series(frame, "B", "units") == [0, 0, 0, 2]
    assert list(read_frame(engine, skus=["B", "missing"])["sku"].unique()) == ["B"]
    assert read_frame(engine, skus=[]).empty


def test_launch_date_opens_the_frame_and_start_clips_it(engine: Engine) -> None:
    add(engine, Product, [product("A", launch_date=d(0)), product("L", launch_date=d(8))])
    add(engine, DailySales, [sale("A", 2, 4), sale("A", 6, 1)])

    frame = read_frame(engine, end=d(9))

    assert dates(frame, "A") == [d(i) for i in range(0, 10)]
    assert series(frame, "A", "units")[:7] == [0, 0, 4, 0, 0, 0, 1]
    assert np.isnan(series(frame, "A", "units")[7:]).all()  # after as_of = d(6)
    assert dates(frame, "L") == [d(8), d(9)]  # launched after as_of: covariate rows only
    clipped = read_frame(engine, skus=["A"], start=d(3), end=d(4))
    assert dates(clipped, "A") == [d(3), d(4)]


def test_price_carries_forward_and_falls_back_to_average_selling_price(engine: Engine) -> None:
    add(engine, Product, [product("A", launch_date=d(0)), product("N")])
    add(
        engine,
        DailySales,
        [
            sale("A", 1, 1, avg_price=2.0),
            sale("A", 2, 1, avg_price=2.5),
            sale("A", 4, 1, avg_price=9.0),  # a listed price exists by then: it wins
            sale("N", 3, 1),
        ],
    )
    add(
        engine,
        Price,
        [
            {"sku": "A", "valid_from": d(4), "price": 5.0},
            {"sku": "A", "valid_from": d(7), "price": 6.0},  # planned, after as_of
        ],
    )

    frame = read_frame(engine, end=d(8))

    price = series(frame, "A", "price")
    assert np.isnan(price[0])  # nothing known before the first sale
    assert price[1:] == [2.0, 2.5, 2.5, 5.0, 5.0, 5.0, 6.0, 6.0]
    assert np.isnan(series(frame, "N", "price")).all()
    # The value of a day does not depend on where the frame starts.
    late = read_frame(engine, skus=["A"], start=d(3), end=d(8))
    assert series(late, "A", "price") == price[3:]


def test_sku_and_category_promotions(engine: Engine) -> None:
    add(
        engine,
        Product,
        [product("A", launch_date=d(0)), product("H", category="HOBBIES", launch_date=d(0))],
    )
    add(engine, DailySales, [sale("A", 9, 1, on_promotion=True), sale("H", 9, 1)])
    add(
        engine,
        Promotion,
        [
            {"promo_id": "p1", "sku": "A", "start_date": d(1), "end_date": d(3),
             "discount_depth": 0.1, "display": True},
            {"promo_id": "p2", "category": "FOODS", "start_date": d(3), "end_date": d(5),
             "discount_depth": 0.3, "mailer": True},
            {"promo_id": "p3", "category": "FOODS", "start_date": d(11), "end_date": d(30),
             "discount_depth": 0.2},  # planned
            {"promo_id": "p4", "sku": "H", "start_date": d(-5), "end_date": d(-1),
             "discount_depth": 0.5},  # before the frame
        ],
    )  # fmt: skip

    frame = read_frame(engine, end=d(12))

    assert series(frame, "A", "on_promotion") == [0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1]
    assert series(frame, "A", "promo_depth") == pytest.approx(
        [0, 0.1, 0.1, 0.3, 0.3, 0.3, 0, 0, 0, 0, 0, 0.2, 0.2]
    )
    assert series(frame, "A", "promo_display") == [0, 1, 1, 1] + [0] * 9
    assert series(frame, "A", "promo_mailer") == [0, 0, 0, 1, 1, 1] + [0] * 7
    for column in ("on_promotion", "promo_depth", "promo_display", "promo_mailer"):
        assert not any(series(frame, "H", column)), column


def test_chunked_sku_lists_read_every_row_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    skus = [f"S{i}" for i in range(5)]
    add(engine, Product, [product(s, launch_date=d(0)) for s in skus])
    add(engine, DailySales, [sale(s, 2, i + 1, avg_price=1.0 + i) for i, s in enumerate(skus)])
    add(
        engine,
        Promotion,
        [{"promo_id": "c", "category": "FOODS", "start_date": d(1), "end_date": d(1),
          "discount_depth": 0.4}],
    )  # fmt: skip
    whole = read_frame(engine, skus=skus)
    monkeypatch.setattr(read_statements, "IN_CHUNK", 2)

    chunked = read_frame(engine, skus=skus)

    pd.testing.assert_frame_equal(chunked, whole)
    assert len(chunked) == 5 * 3
    assert chunked.groupby("sku")["units"].sum().tolist() == [1, 2, 3, 4, 5]
    assert chunked.groupby("sku")["promo_depth"].max().tolist() == pytest.approx([0.4] * 5)


def test_events_follow_the_sku_region(engine: Engine) -> None:
    add(
        engine,
        Product,
        [
            product("CA", region="US-CA", launch_date=d(0)),
            product("TX", region="US-TX", launch_date=d(0)),
            product("DE", region="DE", launch_date=d(0)),
        ],
    )
    add(engine, DailySales, [sale("CA", 5, 1)])
    add(
        engine,
        CalendarEvent,
        [
            {"date": d(1), "name": "Everywhere", "kind": "Cultural", "region": ""},
            {"date": d(2), "name": "US holiday", "kind": "holiday", "region": "US"},
            {"date": d(3), "name": "CA SNAP", "kind": "snap", "region": "US-CA"},
            {"date": d(4), "name": "TX final", "kind": "sporting", "region": "US-TX"},
            {"date": d(5), "name": "National", "kind": "National", "region": "DE"},
        ],
    )

    frame = read_frame(engine)

    assert series(frame, "CA", "is_event") == [0, 1, 1, 0, 0, 0]
    assert series(frame, "CA", "is_holiday") == [0, 0, 1, 0, 0, 0]
    assert series(frame, "CA", "is_snap") == [0, 0, 0, 1, 0, 0]
    assert series(frame, "TX", "is_event") == [0, 1, 1, 0, 1, 0]
    assert series(frame, "TX", "is_snap") == [0] * 6
    assert series(frame, "DE", "is_event") == [0, 1, 0, 0, 0, 1]
    assert series(frame, "DE", "is_holiday") == [0, 0, 0, 0, 0, 1]
    # SNAP days are not events: CA's next event after d(2) is none, capped at 365.
    assert series(frame, "CA", "days_to_event") == [1, 0, 0, 365, 365, 365]
    assert series(frame, "CA", "days_since_event") == [365, 0, 0, 1, 2, 3]


def test_event_distances_do_not_depend_on_the_frame_extent(engine: Engine) -> None:
    add(engine, Product, [product("A", launch_date=d(0))])
    add(engine, DailySales, [sale("A", 600, 1)])
    add(
        engine,
        CalendarEvent,
        [
            {"date": d(-30), "name": "before", "kind": "cultural", "region": ""},
            {"date": d(100), "name": "spring", "kind": "cultural", "region": "US"},
            {"date": d(500), "name": "far", "kind": "holiday", "region": "US-CA"},
        ],
    )

    whole = read_frame(engine)
    window = read_frame(engine, start=d(40), end=d(45))

    assert series(window, "A", "days_to_event") == [60, 59, 58, 57, 56, 55]
    assert series(window, "A", "days_since_event") == [70, 71, 72, 73, 74, 75]
    inner = whole[whole["date"].between(pd.Timestamp(d(40)), pd.Timestamp(d(45)))]
    pd.testing.assert_frame_equal(inner.reset_index(drop=True), window)
    assert whole["days_to_event"].max() == 365  # d(101)..d(134) are > 365 days from d(500)
    assert whole.loc[whole["date"] == pd.Timestamp(d(130)), "days_to_event"].item() == 365
    assert whole.loc[whole["date"] == pd.Timestamp(d(140)), "days_to_event"].item() == 360


def test_cached_events_give_the_same_window(engine: Engine) -> None:
    """Serving reuses every event between ingestions: the window is the one the query gives,
    with events of other regions and far outside the window in the table."""
    add(
        engine,
        Product,
        [product("CA", region="US-CA", launch_date=d(0)), product("DE", region="DE")],
    )
    add(engine, DailySales, [sale("CA", 800, 1), sale("DE", 700, 2)])
    add(
        engine,
        CalendarEvent,
        [
            {"date": d(-400), "name": "ancient", "kind": "cultural", "region": ""},
            {"date": d(2), "name": "US holiday", "kind": "holiday", "region": "US"},
            {"date": d(600), "name": "CA SNAP", "kind": "SNAP ", "region": "US-CA"},
            {"date": d(650), "name": "TX final", "kind": "sporting", "region": "US-TX"},
            {"date": d(700), "name": "National", "kind": "National", "region": "DE"},
            {"date": d(790), "name": "elsewhere", "kind": "cultural", "region": "FR"},
            {"date": d(805), "name": "soon", "kind": "Cultural", "region": "US"},
            {"date": d(1500), "name": "far", "kind": "holiday", "region": ""},
        ],
    )
    events = read_events(engine)
    assert len(events.day) == 8
    for skus, n_days, horizon in ((["CA"], 30, 10), (["CA", "DE"], 200, 28), (None, 5, 0)):
        queried = latest_window(engine, skus, n_days, horizon)
        cached = latest_window(engine, skus, n_days, horizon, events=events)
        pd.testing.assert_frame_equal(cached, queried)
    assert latest_window(engine, ["CA"], 30, 10, events=events)["is_event"].sum() == 1


def test_point_in_time_ignores_sales_after_as_of(engine: Engine) -> None:
    add(engine, Product, [product("A", launch_date=d(0)), product("F")])
    add(
        engine,
        DailySales,
        [
            sale("A", 1, 2, avg_price=3.0),
            sale("A", 5, 7, avg_price=4.0, on_promotion=True),
            sale("F", 6, 1),  # F's first sale is after as_of: F did not exist yet
        ],
    )

    frame = read_frame(engine, as_of=d(3), end=d(6))

    assert series(frame, "A", "units")[:4] == [0, 2, 0, 0]
    assert np.isnan(series(frame, "A", "units")[4:]).all()
    assert series(frame, "A", "price")[1:] == [3.0] * 6  # d(5)'s avg_price is unknown at d(3)
    assert series(frame, "A", "on_promotion") == [0] * 7
    assert "F" not in set(frame["sku"])
    with engine.begin() as conn:
        conn.execute(
            update(DailySales).where(DailySales.sku == "A").where(DailySales.date == d(5))
            .values(units=99, avg_price=1.0)
        )  # fmt: skip
    pd.testing.assert_frame_equal(read_frame(engine, as_of=d(3), end=d(6)), frame)
    assert read_frame(engine, as_of=d(5))["units"].max() == 99


def test_discontinued_skus_stop_at_their_last_sale(engine: Engine) -> None:
    add(
        engine,
        Product,
        [
            product("A", launch_date=d(0), status="discontinued", last_sale_date=d(2)),
            product("B", launch_date=d(0), status="discontinued"),  # no last_sale_date
            product("C", launch_date=d(0)),
        ],
    )
    add(engine, DailySales, [sale("A", 2, 1), sale("B", 3, 1), sale("C", 6, 1)])

    frame = read_frame(engine, end=d(9))

    assert dates(frame, "A") == [d(i) for i in range(0, 3)]
    assert dates(frame, "B") == [d(i) for i in range(0, 4)]
    assert dates(frame, "C") == [d(i) for i in range(0, 10)]


def test_latest_window_has_n_days_and_a_horizon_of_planned_covariates(engine: Engine) -> None:
    add(engine, Product, [product("A", launch_date=d(0)), product("B", launch_date=d(8))])
    add(engine, DailySales, [sale("A", i, float(i)) for i in range(0, 10)])
    add(engine, Price, [{"sku": "A", "valid_from": d(11), "price": 4.5}])

    window = latest_window(engine, ["A", "B"], n_days=5, horizon=3)

    assert_contract(window)
    assert dates(window, "A") == [d(i) for i in range(5, 13)]
    assert series(window, "A", "units")[:5] == [5, 6, 7, 8, 9]
    assert np.isnan(series(window, "A", "units")[5:]).all()
    assert series(window, "A", "price")[-2:] == [4.5, 4.5]
    assert dates(window, "B") == [d(i) for i in range(8, 13)]  # launched inside the window
    past = latest_window(engine, ["A"], n_days=2, as_of=d(3))
    assert series(past, "A", "units") == [2, 3]
    with pytest.raises(ValueError):
        latest_window(engine, ["A"], n_days=0)


def test_read_products(engine: Engine) -> None:
    add(
        engine,
        Product,
        [product("B", launch_date=d(1), item_id="i"), product("A", status="discontinued")],
    )

    frame = read_products(engine)

    assert {c: str(t) for c, t in frame.dtypes.items()} == PRODUCT_COLUMNS
    assert frame["sku"].tolist() == ["A", "B"]
    assert frame["launch_date"].tolist()[1] == pd.Timestamp(d(1))
    assert pd.isna(frame["launch_date"].tolist()[0])
    assert frame["status"].tolist() == ["discontinued", "active"]
    assert read_products(engine, ["B", "Z"])["sku"].tolist() == ["B"]
    assert read_products(engine, []).empty


# -- flags: paid prices, stock-outs, closures ---------------------------------------------------


def test_price_paid_flags_order_line_prices_not_listed_ones(engine: Engine) -> None:
    # PAID has only order-derived average prices; LISTED has a listed price from day 2 on.
    add(engine, Product, [product("PAID"), product("LISTED")])
    add(
        engine,
        DailySales,
        [
            sale("PAID", 0, 2, avg_price=4.0),
            sale("PAID", 3, 1, avg_price=5.0),
            sale("LISTED", 0, 1, avg_price=7.0),
        ],
    )
    add(engine, Price, [{"sku": "LISTED", "valid_from": d(2), "price": 6.0}])
    frame = read_frame(engine, end=d(5), as_of=d(4))
    assert_contract(frame)
    assert series(frame, "PAID", "price") == [4.0, 4.0, 4.0, 5.0, 5.0, 5.0]
    assert series(frame, "PAID", "price_paid") == [1, 1, 1, 1, 1, 1]
    assert series(frame, "LISTED", "price") == [7.0, 7.0, 6.0, 6.0, 6.0, 6.0]
    assert series(frame, "LISTED", "price_paid") == [1, 1, 0, 0, 0, 0]


def test_stock_out_and_closed_flags(engine: Engine) -> None:
    add(engine, Product, [product("A"), product("B", region="US-TX")])
    add(
        engine,
        DailySales,
        [sale("A", 0, 3), sale("A", 1, 0, in_stock=False), sale("A", 2, 1, in_stock=True)],
    )
    add(engine, DailySales, [sale("B", 0, 1)])
    add(
        engine,
        CalendarEvent,
        [
            {"date": d(2), "name": "Inventory day", "kind": "closed", "region": "US-CA"},
            {"date": d(3), "name": "Storm", "kind": "Closed", "region": ""},
        ],
    )
    frame = read_frame(engine, end=d(4), as_of=d(2))
    assert_contract(frame)
    assert series(frame, "A", "stock_out") == [0, 1, 0, 0, 0]
    assert series(frame, "A", "closed") == [0, 0, 1, 1, 0]
    assert series(frame, "B", "closed") == [
        0,
        0,
        0,
        1,
        0,
    ]  # another region; the storm is everywhere
    assert series(frame, "A", "is_event") == [0, 0, 1, 1, 0]


def test_big_reads_stream_the_sales_in_batches_with_the_same_frame(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above FETCH_BATCH grid rows the sales stream in batches turned into arrays one at a time
    (a 54M-row history held as Python rows needed 19 GB): on PostgreSQL as one CSV text per SKU
    parsed by pyarrow, elsewhere as rows from a server-side cursor. The frame is the one-fetch
    frame bit for bit, fractional units and prices, NULL prices and stock flags included."""
    from featurestore import history_grid, readers

    skus = [f"S{i}" for i in range(4)]
    add(engine, Product, [product(s, launch_date=d(0)) for s in skus])
    add(
        engine,
        DailySales,
        [
            sale(
                s,
                day,
                (i + 1) * day / 3,
                avg_price=None if day % 2 else 2.0 + i / 7,
                in_stock=None if day == 4 else day != 3,
                on_promotion=day == 2,
            )
            for i, s in enumerate(skus)
            for day in range(6)
        ],
    )
    whole = read_frame(engine, end=d(7), as_of=d(5))
    batches: list[int] = []
    real = readers.fetch_batches

    def counted(*args: Any, **kwargs: Any) -> Any:
        for rows in real(*args, **kwargs):
            batches.append(len(rows))
            yield rows

    monkeypatch.setattr(readers, "FETCH_BATCH", 5)
    monkeypatch.setattr(readers, "TEXT_BATCH", 3)
    monkeypatch.setattr(history_grid, "JOIN_PIECE", 3)  # as-of joins a few rows at a time
    monkeypatch.setattr(readers, "fetch_batches", counted)
    streamed = read_frame(engine, end=d(7), as_of=d(5))

    pd.testing.assert_frame_equal(streamed, whole)
    if engine.dialect.name == "postgresql":
        assert batches == [3, 1]  # SKUs: one text each, 3 to a batch
    else:
        assert sum(batches) == 24 and max(batches) <= 5 and len(batches) >= 5
    assert series(streamed, "S1", "stock_out") == [0, 0, 0, 1, 0, 0, 0, 0]
    assert series(streamed, "S1", "on_promotion") == [0, 0, 1, 0, 0, 0, 0, 0]
    assert series(streamed, "S1", "units")[:6] == pytest.approx([2 * k / 3 for k in range(6)])
