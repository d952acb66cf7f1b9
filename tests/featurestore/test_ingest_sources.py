"""Daily sales from two sources, and repeats: one rule per SKU-day in either order, --force."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from featurestore.ingest import bulk, ingest_file
from tests.featurestore.ingest_helpers import load_products, rows_of, write

ORDERS_HEAD = "order_id,line,sku,ordered_at,quantity,unit_price,status\n"
DAILY = "SELECT sku, date, units, revenue, avg_price, returned_units, source FROM daily_sales"


def daily(engine: Engine) -> list[tuple[Any, ...]]:
    return [(r[0], str(r[1]), *r[2:]) for r in rows_of(engine, f"{DAILY} ORDER BY sku, date")]


def files(tmp_path: Path) -> tuple[Path, Path]:
    sales = write(
        tmp_path / "sales.csv",
        "sku,date,units,revenue\nA,2024-01-01,36,360\nA,2024-01-02,5,50\n",
    )
    orders = write(
        tmp_path / "orders.csv",
        ORDERS_HEAD + "o1,1,A,2024-01-01T10:00:00,1,10,completed\n"
        "o2,1,A,2024-01-03T10:00:00,2,10,returned\n"
        "o3,1,B,2024-01-01T10:00:00,4,5,completed\n",
    )
    return sales, orders


EXPECTED = [
    ("A", "2024-01-01", 36.0, 360.0, None, 0.0, "direct"),
    ("A", "2024-01-02", 5.0, 50.0, None, 0.0, "direct"),
    ("A", "2024-01-03", 2.0, None, 10.0, 2.0, "orders"),
    ("B", "2024-01-01", 4.0, 20.0, 5.0, 0.0, "orders"),
]


@pytest.fixture(params=[True, False], ids=["rebuilt-indexes", "upsert"])
def rebuild(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    # PostgreSQL: a big share of the table is appended with its indexes dropped and rebuilt.
    monkeypatch.setattr(bulk, "REBUILD_MIN_ROWS", 0 if request.param else 10**12)
    return bool(request.param)


def test_order_lines_leave_directly_loaded_days_alone(
    engine: Engine, tmp_path: Path, rebuild: bool
) -> None:
    load_products(engine, tmp_path)
    sales, orders = files(tmp_path)
    assert ingest_file(engine, "sales", sales).mixed is None
    # PostgreSQL: the first order file is copied straight into order_lines
    report = ingest_file(engine, "orders", orders)
    assert report.rows_accepted == 3
    assert daily(engine) == EXPECTED  # 36 units, not the order line's 1
    assert report.mixed is not None
    assert (report.mixed.outcome, report.mixed.count, report.mixed.first) == (
        "kept",
        1,
        ["A 2024-01-01"],
    )
    assert "1 SKU-day(s) keep their directly loaded daily sales" in report.mixed.describe()
    # the order line is stored, just not summed over the direct day
    assert rows_of(engine, "SELECT order_id FROM order_lines WHERE sku = 'A' ORDER BY 1") == [
        ("o1",),
        ("o2",),
    ]
    # a later order file (staged and upserted) moving a line onto and off direct days
    more = write(
        tmp_path / "more.csv",
        ORDERS_HEAD + "o1,1,A,2024-01-02T10:00:00,3,10,completed\n"
        "o4,1,A,2024-01-01T11:00:00,7,10,completed\n",
    )
    again = ingest_file(engine, "orders", more)
    assert daily(engine) == EXPECTED
    assert again.mixed is not None
    assert (again.mixed.count, again.mixed.first) == (2, ["A 2024-01-01", "A 2024-01-02"])
    (detail,) = rows_of(
        engine, "SELECT detail FROM ingestion_log WHERE file_name = :f", f=str(more)
    )[0]
    assert json.loads(detail)["mixed_days"] == {
        "outcome": "kept",
        "count": 2,
        "first": ["A 2024-01-01", "A 2024-01-02"],
    }


def test_daily_sales_replace_order_derived_days_whole(
    engine: Engine, tmp_path: Path, rebuild: bool
) -> None:
    load_products(engine, tmp_path)
    sales, orders = files(tmp_path)
    assert ingest_file(engine, "orders", orders).mixed is None
    with engine.begin() as conn:  # a stored flag the file does not carry goes back too
        conn.execute(text("UPDATE daily_sales SET in_stock = false, on_promotion = true"))
    report = ingest_file(engine, "sales", sales)
    assert report.mixed is not None
    assert (report.mixed.outcome, report.mixed.count, report.mixed.first) == (
        "replaced",
        1,
        ["A 2024-01-01"],
    )
    # not the orders' returned units or price with the file's units: the file's row, whole
    assert daily(engine) == EXPECTED
    flags = rows_of(
        engine,
        "SELECT on_promotion, in_stock FROM daily_sales WHERE date = '2024-01-01' ORDER BY sku",
    )
    assert [(bool(p), s if s is None else bool(s)) for p, s in flags] == [
        (False, None),
        (True, False),  # B's order-derived row is not in the file: untouched
    ]


def test_both_orders_of_loading_give_the_same_table(
    engine: Engine, tmp_path: Path, rebuild: bool
) -> None:
    load_products(engine, tmp_path)
    sales, orders = files(tmp_path)
    tables = []
    for first, second in (("sales", "orders"), ("orders", "sales")):
        with engine.begin() as conn:
            for table in ("daily_sales", "order_lines", "ingestion_log"):
                conn.execute(text(f"DELETE FROM {table}"))
        paths = {"sales": sales, "orders": orders}
        assert ingest_file(engine, first, paths[first]).status == "loaded"
        assert ingest_file(engine, second, paths[second]).mixed is not None
        tables.append(daily(engine))
    assert tables[0] == tables[1] == EXPECTED


def test_a_repeat_says_it_skips_and_force_loads_it_again(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    first = write(tmp_path / "s1.csv", "sku,date,units\nA,2024-01-01,5\n")
    second = write(tmp_path / "s2.csv", "sku,date,units\nA,2024-01-01,9\n")
    assert ingest_file(engine, "sales", first).status == "loaded"
    quiet = ingest_file(engine, "sales", first)
    assert quiet.status == "unchanged"
    assert "skipped, nothing changed" in quiet.detail
    assert ingest_file(engine, "sales", second).status == "loaded"
    repeat = ingest_file(engine, "sales", first)
    assert repeat.status == "unchanged"
    assert "already loaded at" in repeat.detail and "skipped" in repeat.detail
    assert "1 later load(s) of sales or orders may have changed its rows" in repeat.detail
    assert "--force" in repeat.detail
    assert rows_of(engine, "SELECT units FROM daily_sales") == [(9.0,)]
    forced = ingest_file(engine, "sales", first, force=True)
    assert (forced.status, forced.rows_accepted) == ("loaded", 1)
    assert rows_of(engine, "SELECT units FROM daily_sales") == [(5.0,)]
    # the forced load is the latest of its content: a repeat now changes nothing
    assert "nothing changed" in ingest_file(engine, "sales", first).detail
    # an order load changes daily sales too
    orders = write(tmp_path / "o.csv", ORDERS_HEAD + "o1,1,A,2024-01-02T10:00:00,1,1,completed\n")
    assert ingest_file(engine, "orders", orders).status == "loaded"
    assert "later load(s) of sales or orders" in ingest_file(engine, "sales", first).detail
