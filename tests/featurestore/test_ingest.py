"""Ingestion: every entity, every reject class, idempotency, transactions and crash safety."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from featurestore.config import Settings, get_settings
from featurestore.ingest import (
    IngestError,
    IngestReport,
    TooManyRejects,
    bulk,
    csvfile,
    estimate_rows,
    ingest_file,
    ingest_frames,
    reading,
)

DATA_TABLES = (
    "products",
    "order_lines",
    "daily_sales",
    "prices",
    "promotions",
    "calendar_events",
)
ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, content: str | bytes) -> Path:
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(textwrap.dedent(data.decode("latin-1")).lstrip().encode("latin-1"))
    return path


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every data table's rows (products without their update stamp) and the loaded-log count."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in DATA_TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
            out[table] = sorted(
                (tuple((k, str(v)) for k, v in row.items() if k not in ("updated_at", "id")))
                for row in rows
            )
        out["loaded"] = conn.execute(
            text("SELECT count(*) FROM ingestion_log WHERE status = 'loaded'")
        ).scalar_one()
    return out


def rows_of(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def read_rejects(path: Path | None) -> list[dict[str, str]]:
    assert path is not None and path.exists()
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_products(engine: Engine, tmp_path: Path, skus: tuple[str, ...] = ("A", "B")) -> None:
    lines = "\n".join(f"{s},Product {s},fruit,US-CA" for s in skus)
    path = write(tmp_path / "products.csv", f"sku,name,category,region\n{lines}\n")
    assert ingest_file(engine, "products", path).status == "loaded"


def use_timezone(monkeypatch: pytest.MonkeyPatch, zone: str) -> Settings:
    monkeypatch.setenv("SALESFC_TIMEZONE", zone)
    get_settings.cache_clear()
    return get_settings()


# --- every entity --------------------------------------------------------------------------


def test_products_keep_unknown_columns_as_attributes(engine: Engine, tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.csv",
        """
        sku,name,category,color,attributes,status
        A,Apple,fruit,red,"{""organic"": true}",active
        B,Banana,fruit,,,DISCONTINUED
        """,
    )
    report = ingest_file(engine, "products", path)
    assert (report.status, report.rows_accepted, report.rows_rejected) == ("loaded", 2, 0)
    got = rows_of(engine, "SELECT sku, attributes, status FROM products ORDER BY sku")
    attrs = [json.loads(a) if isinstance(a, str) else a for _, a, _ in got]
    assert attrs == [{"organic": True, "color": "red"}, None]
    assert [s for *_, s in got] == ["active", "discontinued"]


def test_a_partial_product_file_updates_only_its_columns(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(tmp_path / "names.csv", "sku,name\nA,Apple Pie\n")
    assert ingest_file(engine, "products", path).status == "loaded"
    got = rows_of(engine, "SELECT sku, name, category FROM products ORDER BY sku")
    assert got == [("A", "Apple Pie", "fruit"), ("B", "Product B", "fruit")]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_every_entity_loads_from_csv_and_parquet(engine: Engine, tmp_path: Path, fmt: str) -> None:
    frames = {
        "products": pd.DataFrame(
            {"sku": ["A", "B"], "name": ["a", "b"], "launch_date": ["2023-01-01", None]}
        ),
        "events": pd.DataFrame(
            {
                "date": ["2024-01-01", "2024-01-01"],
                "name": ["NY", "NY"],
                "kind": ["holiday"] * 2,
                "region": ["US", None],
            }
        ),
        "prices": pd.DataFrame(
            {
                "sku": ["A", "A", "B"],
                "valid_from": ["2024-01-01", "2099-01-01", "2024-01-01"],
                "price": [1.5, 1.75, 2.0],
            }
        ),
        "promotions": pd.DataFrame(
            {
                "promo_id": ["P1", "P2"],
                "sku": ["A", None],
                "category": [None, "fruit"],
                "start_date": ["2024-01-01", "2099-01-01"],
                "end_date": ["2024-01-07", "2099-01-07"],
                "discount_depth": [0.2, 0.1],
                "display": ["yes", "0"],
                "mailer": [None, "true"],
            }
        ),
        "sales": pd.DataFrame(
            {
                "sku": ["A", "A", "B"],
                "date": ["2024-01-01", "2024-01-02", "2024-01-01"],
                "units": [3, 0, 1.5],
                "on_promotion": ["true", "false", None],
            }
        ),
        "orders": pd.DataFrame(
            {
                "order_id": ["o1", "o2"],
                "line": [1, 1],
                "sku": ["A", "B"],
                "ordered_at": ["2024-01-03T10:00:00Z", "2024-01-03T11:00:00Z"],
                "quantity": [2, 1],
                "unit_price": [1.5, 2.0],
            }
        ),
    }
    for entity, frame in frames.items():
        path = tmp_path / f"{entity}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        report = ingest_file(engine, entity, path)
        assert (report.status, report.rows_read, report.rows_rejected) == (
            "loaded",
            len(frame),
            0,
        ), report
    counts = {t: rows_of(engine, f"SELECT count(*) FROM {t}")[0][0] for t in DATA_TABLES}
    assert counts == {
        "products": 2,
        "calendar_events": 2,
        "prices": 3,
        "promotions": 2,
        "daily_sales": 5,
        "order_lines": 2,
    }
    promos = rows_of(engine, "SELECT promo_id, display, mailer, kind FROM promotions ORDER BY 1")
    assert [(p, bool(d), bool(m), k) for p, d, m, k in promos] == [
        ("P1", True, False, "discount"),
        ("P2", False, True, "discount"),
    ]
    regions = rows_of(engine, "SELECT region FROM calendar_events ORDER BY region")
    assert regions == [("",), ("US",)]
    sales = rows_of(engine, "SELECT sku, units, source FROM daily_sales ORDER BY sku, date")
    assert sales == [
        ("A", 3.0, "direct"),
        ("A", 0.0, "direct"),
        ("A", 2.0, "orders"),
        ("B", 1.5, "direct"),
        ("B", 1.0, "orders"),
    ]
    first_last = rows_of(engine, "SELECT sku, first_sale_date, last_sale_date FROM products")
    assert {s: (str(f), str(la)) for s, f, la in first_last} == {
        "A": ("2024-01-01", "2024-01-03"),
        "B": ("2024-01-01", "2024-01-03"),
    }


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


def test_column_mapping_loads_a_platform_export(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(tmp_path / "export.csv", "Article,Day,Qty Sold\nA,2024-01-01,4\nB,2024-01-01,2\n")
    report = ingest_file(
        engine, "sales", path, mapping={"sku": "Article", "date": "Day", "units": "Qty Sold"}
    )
    assert (report.status, report.rows_accepted) == ("loaded", 2)
    assert rows_of(engine, "SELECT sum(units) FROM daily_sales") == [(6.0,)]


def test_missing_required_columns_are_named(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    before = snapshot(engine)
    path = write(tmp_path / "sales.csv", "sku,qty\nA,1\n")
    with pytest.raises(IngestError) as err:
        ingest_file(engine, "sales", path)
    message = str(err.value)
    assert "date" in message and "units" in message and "columns found: sku, qty" in message
    with pytest.raises(IngestError, match="not in the source"):
        ingest_file(engine, "sales", path, mapping={"units": "Qty", "date": "sku"})
    assert snapshot(engine) == before


# --- rejects -------------------------------------------------------------------------------

TOMORROW = (date.today() + timedelta(days=2)).isoformat()
LONG = "X" * 65
# entity, header, one bad data row, the reason and column it must be refused with
REJECT_CASES = [
    ("sales", "sku,date,units", "A,2024-02-30,1", "unparseable date", "date"),
    ("sales", "sku,date,units", "A,01/05/2024,1", "unparseable date", "date"),
    ("sales", "sku,date,units", "A,2024-01-05,abc", "not a number", "units"),
    ("sales", "sku,date,units", "A,2024-01-05,NaN", "NaN or infinite number", "units"),
    ("sales", "sku,date,units", "A,2024-01-05,inf", "NaN or infinite number", "units"),
    ("sales", "sku,date,units", "A,2024-01-05,-3", "negative value", "units"),
    ("sales", "sku,date,units", f"A,{TOMORROW},1", "date in the future", "date"),
    ("sales", "sku,date,units", "ZZ,2024-01-05,1", "unknown sku", "sku"),
    ("sales", "sku,date,units", ",2024-01-05,1", "missing value", "sku"),
    (
        "orders",
        "order_id,line,sku,ordered_at,quantity,status",
        "o9,1,A,2024-01-05T10:00:00Z,-2,completed",
        "negative quantity that is not a return",
        "quantity",
    ),
    (
        "orders",
        "order_id,line,sku,ordered_at,quantity,status",
        "o9,1.5,A,2024-01-05T10:00:00Z,2,completed",
        "not an integer",
        "line",
    ),
    (
        "orders",
        "order_id,line,sku,ordered_at,quantity,status",
        "o9,1,A,yesterday,2,completed",
        "unparseable timestamp",
        "ordered_at",
    ),
    (
        "orders",
        "order_id,line,sku,ordered_at,quantity,status",
        "o9,1,A,2024-01-05T10:00:00Z,2,shipped",
        "unknown status",
        "status",
    ),
    (
        "orders",
        "order_id,line,sku,ordered_at,quantity,status",
        "o9,1,ZZ,2024-01-05T10:00:00Z,2,completed",
        "unknown sku",
        "sku",
    ),
    ("prices", "sku,valid_from,price", "ZZ,2024-01-05,1.5", "unknown sku", "sku"),
    (
        "promotions",
        "promo_id,sku,start_date,end_date",
        "P9,ZZ,2024-01-05,2024-01-09",
        "unknown sku",
        "sku",
    ),
    (
        "promotions",
        "promo_id,sku,start_date,end_date",
        "P9,A,2024-01-09,2024-01-05",
        "end_date before start_date",
        "end_date",
    ),
    ("products", "sku,name", f"{LONG},long sku", "string too long", "sku"),
    ("events", "date,name,kind", "2024-01-05,Fair,maybe,extra", "wrong number of fields", ""),
    (
        "sales",
        "sku,date,units,on_promotion",
        "A,2024-01-05,1,perhaps",
        "not a boolean",
        "on_promotion",
    ),
]
GOOD_ROWS = {
    "sales": "A,2024-01-04,1",
    "orders": "o1,1,A,2024-01-05T10:00:00Z,2,completed",
    "prices": "A,2024-01-05,1.5",
    "promotions": "P1,A,2024-01-05,2024-01-09",
    "products": "C,cherry",
    "events": "2024-01-05,Fair,custom",
}


@pytest.mark.parametrize(("entity", "header", "bad", "reason", "column"), REJECT_CASES)
def test_each_reject_class_is_reported_and_leaves_the_store_as_it_was(
    engine: Engine, tmp_path: Path, entity: str, header: str, bad: str, reason: str, column: str
) -> None:
    load_products(engine, tmp_path)
    good = GOOD_ROWS[entity] + ("" if header.count(",") == GOOD_ROWS[entity].count(",") else ",")
    path = write(tmp_path / f"{entity}.csv", f"{header}\n{good}\n{bad}\n")
    before = snapshot(engine)
    with pytest.raises(TooManyRejects) as err:
        ingest_file(engine, entity, path, max_reject=0.0)
    assert snapshot(engine) == before
    failed = err.value.report
    assert (failed.status, failed.rows_read, failed.rows_rejected) == ("failed", 2, 1)
    (only,) = read_rejects(failed.reject_path)
    assert (only["row"], only["reason"], only["column"]) == ("2", reason, column)
    assert only["value"] in bad if reason != "wrong number of fields" else bad in only["value"]
    assert failed.reasons == {f"{reason} ({column})": 1}

    report = ingest_file(engine, entity, path, max_reject=0.5)
    assert (report.status, report.rows_accepted, report.rows_rejected) == ("loaded", 1, 1)
    rejects = read_rejects(report.reject_path)
    assert [(r["row"], r["reason"], r["column"]) for r in rejects] == [("2", reason, column)]


def test_undecodable_bytes_reject_the_row_not_the_file(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_bytes(b"sku,name\nA,Apple\nB,Ban\xffana\nC,Cherry\n")
    before = snapshot(engine)
    with pytest.raises(TooManyRejects):
        ingest_file(engine, "products", path, max_reject=0.0)
    assert snapshot(engine) == before
    report = ingest_file(engine, "products", path, max_reject=0.5)
    assert (report.rows_accepted, report.rows_rejected) == (2, 1)
    assert [
        (r["row"], r["reason"], r["column"], r["value"]) for r in read_rejects(report.reject_path)
    ] == [("2", "undecodable bytes", "name", "Ban\\xffana")]
    assert rows_of(engine, "SELECT sku FROM products ORDER BY sku") == [("A",), ("C",)]
    # with a malformed row in the same block, records are parsed one by one: same verdicts
    path.write_bytes(b"sku,name\nD,x,extra\nE,Ban\xffana\nF,Fig\n")
    report = ingest_file(engine, "products", path, max_reject=0.7)
    assert [(r["row"], r["reason"], r["value"]) for r in read_rejects(report.reject_path)] == [
        ("1", "wrong number of fields", "3 fields, expected 2: D,x,extra"),
        ("2", "undecodable bytes", "Ban\\xffana"),
    ]
    assert rows_of(engine, "SELECT sku FROM products WHERE sku > 'C'") == [("F",)]


def test_duplicate_keys_in_a_file_reject_every_copy(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "sales.csv",
        "sku,date,units\nA,2024-01-01,1\nA,2024-01-02,5\nB,2024-01-01,2\nA,2024-01-02,6\n",
    )
    before = snapshot(engine)
    with pytest.raises(TooManyRejects):
        ingest_file(engine, "sales", path, max_reject=0.25)
    assert snapshot(engine) == before
    report = ingest_file(engine, "sales", path, max_reject=0.6)
    assert (report.rows_accepted, report.rows_rejected) == (2, 2)
    assert [(r["row"], r["reason"], r["value"]) for r in read_rejects(report.reject_path)] == [
        ("2", "duplicate key in file", "A|2024-01-02"),
        ("4", "duplicate key in file", "A|2024-01-02"),
    ]
    assert rows_of(engine, "SELECT count(*) FROM daily_sales WHERE date = '2024-01-02'") == [(0,)]


def test_rejects_keep_row_order_across_chunks_and_quoted_newlines(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "MIN_BLOCK", 64)  # a block is a few records
    lines = ["sku,name,category"]
    expected = []
    for i in range(1, 301):
        if i % 37 == 0:
            lines.append(f"S{i},bad,{LONG}")
            expected.append((str(i), "string too long", "category"))
        elif i % 50 == 0:
            lines.append(f'S{i},"two\nlines, ""quoted""",c')
        elif i % 91 == 0:
            lines.append(f"S{i},too,many,fields")
            expected.append((str(i), "wrong number of fields", ""))
        elif i in (92, 150):  # next to a malformed row (parsed record by record), and not
            lines.append(f"S{i},caf\xe9,c")
            expected.append((str(i), "undecodable bytes", "name"))
        else:
            lines.append(f"S{i},n{i},c")
    path = tmp_path / "p.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    report = ingest_file(engine, "products", path, chunk_rows=2, max_reject=0.5)
    assert report.rows_read == 300
    assert [
        (r["row"], r["reason"], r["column"]) for r in read_rejects(report.reject_path)
    ] == sorted(expected, key=lambda r: int(r[0]))
    assert rows_of(engine, "SELECT name FROM products WHERE sku = 'S50'") == [
        ('two\nlines, "quoted"',)
    ]


def test_too_many_rejects_fail_and_log(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(tmp_path / "sales.csv", "sku,date,units\nA,2024-01-01,x\nA,2024-01-02,1\n")
    with pytest.raises(TooManyRejects, match=r"50\.0%"):
        ingest_file(engine, "sales", path)  # settings.max_reject_share is 5%
    assert rows_of(engine, "SELECT count(*) FROM daily_sales") == [(0,)]
    assert rows_of(engine, "SELECT status FROM ingestion_log WHERE entity = 'sales'") == [
        ("failed",)
    ]


# --- idempotency ---------------------------------------------------------------------------


def test_loading_the_same_file_again_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(tmp_path / "sales.csv", "sku,date,units\nA,2024-01-01,1\nB,2024-01-01,2\n")
    first = ingest_file(engine, "sales", path)
    after_first = snapshot(engine)
    again = ingest_file(engine, "sales", path)
    assert (first.status, again.status) == ("loaded", "unchanged")
    assert again.checksum == first.checksum and again.rows_read == 2
    assert "already loaded" in again.detail
    assert snapshot(engine) == after_first
    # a changed file is an upsert: same keys converge, nothing duplicates
    write(path, "sku,date,units\nA,2024-01-01,7\nB,2024-01-01,2\n")
    assert ingest_file(engine, "sales", path).status == "loaded"
    assert rows_of(engine, "SELECT sku, units FROM daily_sales ORDER BY sku") == [
        ("A", 7.0),
        ("B", 2.0),
    ]


def test_generated_frames_load_once(engine: Engine, tmp_path: Path) -> None:
    products = pd.DataFrame({"sku": ["A", "B"], "category": ["x", "y"]})
    sales = pd.DataFrame(
        {
            "sku": ["A"] * 10 + ["B"] * 10,
            "date": list(pd.date_range("2024-01-01", periods=10)) * 2,
            "units": np.arange(20, dtype=float),
        }
    )
    assert ingest_frames(engine, "products", [products], source="gen").status == "loaded"
    report = ingest_frames(engine, "sales", iter([sales.iloc[:7], sales.iloc[7:]]), source="gen")
    assert (report.status, report.rows_accepted) == ("loaded", 20)
    again = ingest_frames(engine, "sales", [sales], source="gen")  # split differently
    assert (again.status, again.checksum) == ("unchanged", report.checksum)
    assert rows_of(engine, "SELECT sum(units) FROM daily_sales") == [(190.0,)]


def test_estimate_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "a,b\n1,2\n3,4")
    assert estimate_rows(path) == 2
    pd.DataFrame({"a": range(5)}).to_parquet(tmp_path / "a.parquet")
    assert estimate_rows(tmp_path / "a.parquet") == 5


# --- crash safety --------------------------------------------------------------------------

CRASH_SCRIPT = """
import sys, time
from pathlib import Path
from featurestore import ingest
from featurestore.db import get_engine
from featurestore.ingest.store import Store

mode, path = sys.argv[1], Path(sys.argv[2])
if mode == "commit":
    original = Store.log
    def log_then_hang(self, report, started_at):
        original(self, report, started_at)
        print("merged", flush=True)
        time.sleep(120)
    Store.log = log_then_hang
def progress(rows):
    if mode == "read":  # the first chunk is staged: hang there until killed
        print("chunk", rows, flush=True)
        time.sleep(120)
ingest.ingest_file(get_engine(), "orders", path, progress=progress)
print("finished", flush=True)
"""


def order_file(path: Path, n: int) -> Path:
    rng = np.random.default_rng(3)
    stamps = pd.Timestamp("2023-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 300 * 86400, n), unit="s"
    )
    pd.DataFrame(
        {
            "order_id": [f"o{i // 3}" for i in range(n)],
            "line": np.arange(n) % 3,
            "sku": np.where(rng.random(n) < 0.5, "A", "B"),
            "ordered_at": stamps.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "quantity": rng.integers(1, 5, n),
            "unit_price": rng.random(n).round(2) + 1,
        }
    ).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("mode", ["read", "commit"])
def test_a_killed_ingest_leaves_nothing_and_a_rerun_loads_all(
    engine: Engine, tmp_path: Path, mode: str
) -> None:
    load_products(engine, tmp_path)
    path = order_file(tmp_path / "orders.csv", 40_000)
    before = snapshot(engine)
    with subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, mode, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=os.environ.copy(),
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert line.startswith("merged" if mode == "commit" else "chunk"), line
    assert snapshot(engine) == before
    report: IngestReport = ingest_file(engine, "orders", path)
    assert (report.status, report.rows_accepted) == ("loaded", 40_000)
    assert rows_of(engine, "SELECT count(*) FROM order_lines") == [(40_000,)]
    total = pd.read_csv(path)["quantity"].sum()
    assert rows_of(engine, "SELECT sum(units) FROM daily_sales") == [(float(total),)]


def test_sales_and_orders_of_unknown_skus_never_reach_the_store(
    engine: Engine, tmp_path: Path
) -> None:
    # daily_sales.sku and order_lines.sku carry no foreign key (migrations 0003 and 0004): the
    # load's own SKU check is what keeps them pointing at products.
    load_products(engine, tmp_path)
    orders = write(
        tmp_path / "o.csv",
        "order_id,line,sku,ordered_at,quantity\n"
        "o1,1,A,2024-01-01,2\no1,2,ZZ,2024-01-01,1\no2,1,B,2024-01-02,4\no3,1,YY,2024-01-02,1\n",
    )
    sales = write(tmp_path / "s.csv", "sku,date,units\nA,2024-02-01,3\nXX,2024-02-01,5\n")
    reports = [
        ingest_file(engine, e, p, max_reject=0.5) for e, p in (("orders", orders), ("sales", sales))
    ]
    assert [r.reasons for r in reports] == [{"unknown sku (sku)": 2}, {"unknown sku (sku)": 1}]
    orphans = (
        "SELECT count(*) FROM {} x WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.sku = x.sku)"
    )
    for table in ("order_lines", "daily_sales"):
        assert rows_of(engine, orphans.format(table)) == [(0,)]
    assert rows_of(engine, "SELECT sku, units FROM daily_sales ORDER BY sku, date") == [
        ("A", 2.0),
        ("A", 3.0),
        ("B", 4.0),
    ]
    with engine.connect() as conn:
        from sqlalchemy import inspect

        assert inspect(conn).get_foreign_keys("daily_sales") == []


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
        ("A", "2024-01-01", 6.0, 6.0, 4.0, "orders"),  # the later load wins over the direct row
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


def test_prefetched_batches_keep_order_and_raise_the_readers_error() -> None:
    # Parquet batches are decoded by a reader thread a few batches ahead of validation.
    assert list(reading.prefetched(iter(range(50)), depth=2)) == list(range(50))

    def broken() -> Any:
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in reading.prefetched(broken()):
            got.append(item)
    assert got == [1]
    early = reading.prefetched(iter(range(1000)), depth=1)
    assert next(early) == 0
    early.close()  # a consumer that stops early ends the reader thread too


def test_generated_frames_of_concatenated_parts_load(engine: Engine, tmp_path: Path) -> None:
    # pandas text columns built by concatenation are chunked Arrow arrays underneath.
    load_products(engine, tmp_path)
    parts = [
        pd.DataFrame(
            {
                "order_id": pd.Series([f"o{i}", f"o{i}"], dtype="str"),
                "line": [1, 2],
                "sku": pd.Series(["A", "B"], dtype="str"),
                "ordered_at": pd.to_datetime([f"2024-01-0{i} 10:00"] * 2, utc=True),
                "quantity": [1.0, 2.0],
                "status": pd.Series(["completed", "completed"], dtype="str"),
            }
        )
        for i in (1, 2, 3)
    ]
    frame = pd.concat(parts, ignore_index=True)
    assert isinstance(pa.array(frame["sku"], type=pa.string()), pa.ChunkedArray)
    report = ingest_frames(engine, "orders", [frame], source="concat")
    assert (report.status, report.rows_accepted) == ("loaded", 6)
    assert rows_of(engine, "SELECT sku, sum(units) FROM daily_sales GROUP BY sku ORDER BY sku") == [
        ("A", 3.0),
        ("B", 6.0),
    ]
