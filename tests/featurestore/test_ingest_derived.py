"""Order lines into daily sales and sale dates: upserts, moved lines, rebuilds, direct loads."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from featurestore.ingest import bulk, ingest_file
from tests.featurestore.ingest_helpers import (
    load_products,
    read_rejects,
    rows_of,
    use_timezone,
    write,
)


def test_order_lines_become_daily_sales(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_timezone(monkeypatch, "America/New_York")
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "orders.csv",
        """
        order_id,line,sku,ordered_at,quantity,unit_price,discount,status
        o1,1,A,2024-03-05T15:00:00Z,2,10,0,completed
        o1,2,A,2024-03-06T03:00:00Z,1,10,0.5,completed
        o2,1,A,2024-03-05 20:00:00,3,8,,returned
        o3,1,A,2024-03-05T12:00:00-05:00,5,10,,cancelled
        o4,1,A,2024-03-07T12:00:00Z,-1,10,,returned
        o5,1,B,2024-03-05T12:00:00Z,4,,,
        """,
    )
    report = ingest_file(engine, "orders", path)
    assert (report.status, report.rows_accepted) == ("loaded", 6)
    got = rows_of(
        engine,
        "SELECT sku, date, units, revenue, avg_price, returned_units, source FROM daily_sales "
        "ORDER BY sku, date",
    )
    # 03:00 UTC on the 6th is still the 5th in New York; the naive 20:00 is New York time.
    assert [(s, str(d), u, r, p, ret, src) for s, d, u, r, p, ret, src in got] == [
        ("A", "2024-03-05", 6.0, 25.0, pytest.approx((20 + 5 + 24) / 6), 3.0, "orders"),
        ("A", "2024-03-07", 0.0, None, None, 1.0, "orders"),
        ("B", "2024-03-05", 4.0, None, None, 0.0, "orders"),
    ]
    stamps = rows_of(
        engine, "SELECT order_id, sale_date FROM order_lines WHERE line = 1 ORDER BY 1"
    )
    assert [(o, str(d)) for o, d in stamps][:2] == [("o1", "2024-03-05"), ("o2", "2024-03-05")]
    # the instant survives staging (PostgreSQL receives it as naive UTC in a UTC transaction)
    (stamp,) = rows_of(engine, "SELECT ordered_at FROM order_lines WHERE order_id = 'o3'")[0]
    instant = pd.Timestamp(stamp)
    if instant.tzinfo is None:  # SQLite keeps UTC text
        instant = instant.tz_localize("UTC")
    assert instant == pd.Timestamp("2024-03-05T17:00:00Z")


def test_a_moved_order_line_recomputes_both_days(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    first = write(
        tmp_path / "o1.csv", "order_id,line,sku,ordered_at,quantity\no1,1,A,2024-01-01,2\n"
    )
    ingest_file(engine, "orders", first)
    moved = write(
        tmp_path / "o2.csv", "order_id,line,sku,ordered_at,quantity\no1,1,B,2024-01-02,2\n"
    )
    assert ingest_file(engine, "orders", moved).status == "loaded"
    got = rows_of(engine, "SELECT sku, date, units FROM daily_sales ORDER BY sku, date")
    assert [(s, str(d), u) for s, d, u in got] == [
        ("A", "2024-01-01", 0.0),
        ("B", "2024-01-02", 2.0),
    ]
    assert rows_of(engine, "SELECT first_sale_date FROM products WHERE sku = 'A'") == [(None,)]


@pytest.mark.parametrize("rebuild", [True, False], ids=["rebuilt-indexes", "upsert"])
def test_big_order_loads_rebuild_indexes_with_the_same_result(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rebuild: bool
) -> None:
    # PostgreSQL appends a file as big as the table with its indexes dropped and built again.
    monkeypatch.setattr(bulk, "REBUILD_MIN_ROWS", 0 if rebuild else 10**12)
    load_products(engine, tmp_path)
    head = "order_id,line,sku,ordered_at,quantity\n"
    first = write(
        tmp_path / "o1.csv",
        head + "o1,1,A,2024-01-01,2\no1,2,A,2024-01-01,1\no2,1,B,2024-01-01,4\n",
    )
    assert ingest_file(engine, "orders", first).rows_accepted == 3
    second = write(
        tmp_path / "o2.csv",
        head + "o1,1,A,2024-01-01,5\no1,2,B,2024-01-02,1\no2,1,B,2024-01-01,4\n"
        "o3,1,A,2024-01-02,3\n",
    )
    assert ingest_file(engine, "orders", second).rows_accepted == 4
    lines = rows_of(engine, "SELECT order_id, line, sku, quantity FROM order_lines ORDER BY 1, 2")
    assert lines == [
        ("o1", 1, "A", 5.0),
        ("o1", 2, "B", 1.0),
        ("o2", 1, "B", 4.0),
        ("o3", 1, "A", 3.0),
    ]
    got = rows_of(engine, "SELECT sku, date, units FROM daily_sales ORDER BY sku, date")
    assert [(s, str(d), u) for s, d, u in got] == [
        ("A", "2024-01-01", 5.0),
        ("A", "2024-01-02", 3.0),
        ("B", "2024-01-01", 4.0),
        ("B", "2024-01-02", 1.0),
    ]
    if engine.dialect.name == "postgresql":
        indexes = rows_of(
            engine, "SELECT indexname FROM pg_indexes WHERE tablename = 'order_lines' ORDER BY 1"
        )
        assert indexes == [("ix_order_lines_sale_date_sku",), ("pk_order_lines",)]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO order_lines (order_id, line, sku, ordered_at, sale_date, quantity, "
                "discount, status) VALUES ('o1', 1, 'A', '2024-01-01', '2024-01-01', 1, 0, "
                "'completed')"
            )
        )


@pytest.mark.parametrize("rebuild", [True, False], ids=["rebuilt-indexes", "upsert"])
def test_a_first_order_file_loads_straight_into_the_tables(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rebuild: bool
) -> None:
    # The first order file goes straight into order_lines on PostgreSQL (no stage), and a big
    # one appends its daily sales with daily_sales' indexes built again; the result is the same.
    monkeypatch.setattr(bulk, "REBUILD_MIN_ROWS", 0 if rebuild else 10**12)
    load_products(engine, tmp_path)
    direct = write(tmp_path / "s.csv", "sku,date,units\nA,2024-01-01,9\nA,2024-01-05,7\n")
    assert ingest_file(engine, "sales", direct).rows_accepted == 2
    orders = write(
        tmp_path / "o.csv",
        "order_id,line,sku,ordered_at,quantity,unit_price,status\n"
        "o1,1,A,2024-01-01T10:00:00,2,3.0,completed\n"
        "o1,2,B,2024-01-01T11:00:00,1,5.0,cancelled\n"
        "o2,1,A,2024-01-01T12:00:00,4,2.0,returned\n"
        "o3,1,B,2024-01-02T09:00:00,3,5.0,completed\n"
        "o9,1,A,2024-01-03T09:00:00,1,1.0,completed\n"
        "o9,1,B,2024-01-03T09:30:00,8,1.0,completed\n",
    )
    report = ingest_file(engine, "orders", orders, max_reject=0.5)
    assert (report.rows_accepted, report.rows_rejected) == (4, 2)
    assert [(r["row"], r["reason"], r["value"]) for r in read_rejects(report.reject_path)] == [
        ("5", "duplicate key in file", "o9|1"),
        ("6", "duplicate key in file", "o9|1"),
    ]
    assert rows_of(engine, "SELECT order_id, line FROM order_lines ORDER BY 1, 2") == [
        ("o1", 1),
        ("o1", 2),
        ("o2", 1),
        ("o3", 1),
    ]
    got = rows_of(
        engine,
        "SELECT sku, date, units, revenue, returned_units, source FROM daily_sales "
        "ORDER BY sku, date",
    )
    assert [(s, str(d), u, r, ru, src) for s, d, u, r, ru, src in got] == [
        ("A", "2024-01-01", 9.0, None, 0.0, "direct"),  # the direct total stays authoritative
        ("A", "2024-01-05", 7.0, None, 0.0, "direct"),
        ("B", "2024-01-01", 0.0, None, 0.0, "orders"),  # cancelled only: a day with 0 units
        ("B", "2024-01-02", 3.0, 15.0, 0.0, "orders"),
    ]
    firsts = rows_of(engine, "SELECT sku, first_sale_date FROM products ORDER BY sku")
    assert [(s, str(d)) for s, d in firsts] == [("A", "2024-01-01"), ("B", "2024-01-02")]
    if engine.dialect.name == "postgresql":
        indexes = rows_of(
            engine,
            "SELECT indexname FROM pg_indexes WHERE tablename IN ('order_lines', 'daily_sales') "
            "ORDER BY 1",
        )
        assert indexes == [
            ("ix_daily_sales_date",),
            ("ix_order_lines_sale_date_sku",),
            ("pk_daily_sales",),
            ("pk_order_lines",),
        ]
    assert ingest_file(engine, "orders", orders, max_reject=0.5).status == "unchanged"


def test_a_direct_load_sums_days_like_the_sql_derivation(engine: Engine, tmp_path: Path) -> None:
    # On PostgreSQL the first order file's daily sales are summed while the lines stream; they
    # must equal what the SQL derivation makes of the stored lines (on SQLite: the SQL itself).
    from training.synth import iter_order_lines

    skus = tuple(f"S{i}" for i in range(7))
    load_products(engine, tmp_path, skus)
    end = date.today() - timedelta(days=1)
    frame = pd.concat(
        iter_order_lines(4_000, seed=3, skus=skus, start=end - timedelta(days=20), end=end)
    )
    frame = frame.reset_index(drop=True)
    frame.loc[frame.index[::13], "unit_price"] = np.nan  # unpriced lines: no revenue, no price
    frame.loc[frame["sku"] == "S5", "unit_price"] = np.nan  # days without any price
    cancelled = (frame["sku"] == "S6") & (frame["status"] != "returned")
    frame.loc[cancelled, "status"] = "cancelled"  # days of cancelled lines only: 0 units
    frame.loc[cancelled, "quantity"] = frame.loc[cancelled, "quantity"].abs()
    path = tmp_path / "orders.parquet"
    frame.to_parquet(path, index=False)
    report = ingest_file(engine, "orders", path, chunk_rows=700)
    assert report.rows_accepted == 4_000
    assert set(frame["status"]) == {"completed", "cancelled", "returned"}
    assert (frame["quantity"] < 0).any()
    demand = "o.quantity > 0 AND o.status IN ('completed', 'returned')"
    value = "o.quantity * o.unit_price * (1 - o.discount)"
    expected = rows_of(
        engine,
        f"SELECT o.sku, o.sale_date, COALESCE(SUM(CASE WHEN {demand} THEN o.quantity END), 0), "
        f"SUM(CASE WHEN o.quantity > 0 AND o.status = 'completed' THEN {value} END), "
        f"SUM(CASE WHEN {demand} THEN {value} END) / NULLIF(SUM(CASE WHEN {demand} "
        "AND o.unit_price IS NOT NULL THEN o.quantity END), 0), "
        "COALESCE(SUM(CASE WHEN o.status = 'returned' THEN ABS(o.quantity) END), 0) "
        "FROM order_lines o GROUP BY o.sku, o.sale_date ORDER BY 1, 2",
    )
    got = rows_of(
        engine,
        "SELECT sku, date, units, revenue, avg_price, returned_units FROM daily_sales "
        "ORDER BY sku, date",
    )
    assert len(got) == len(expected) > 100
    for mine, sql in zip(got, expected, strict=True):
        assert (mine[0], str(mine[1])) == (sql[0], str(sql[1]))
        for a, b in zip(mine[2:], sql[2:], strict=True):
            assert (a is None) == (b is None), (mine, sql)
            if a is not None:
                assert a == pytest.approx(b, rel=1e-12, abs=1e-9), (mine, sql)
    assert any(r[3] is None for r in got) and any(r[2] == 0 for r in got)
