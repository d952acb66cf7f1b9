"""Rejects: every reject class, duplicate keys, the reject share, unknown SKUs."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from featurestore.ingest import TooManyRejects, ingest_file
from tests.featurestore.ingest_helpers import (
    LONG,
    load_products,
    read_rejects,
    rows_of,
    snapshot,
    write,
)

TOMORROW = (date.today() + timedelta(days=2)).isoformat()


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
    # a negative quantity that is not a return is a cancellation, no reject:
    # tests/featurestore/test_validate_exports.py
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


def test_too_many_rejects_fail_and_log(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(tmp_path / "sales.csv", "sku,date,units\nA,2024-01-01,x\nA,2024-01-02,1\n")
    with pytest.raises(TooManyRejects, match=r"50\.0%"):
        ingest_file(engine, "sales", path)  # settings.max_reject_share is 5%
    assert rows_of(engine, "SELECT count(*) FROM daily_sales") == [(0,)]
    assert rows_of(engine, "SELECT status FROM ingestion_log WHERE entity = 'sales'") == [
        ("failed",)
    ]


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
