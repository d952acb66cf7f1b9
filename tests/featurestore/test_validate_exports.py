"""Real exports as they come (issue #11, D10): names matched whatever their case and
separators, --ignore, optional line and quantity, cancellations, discount amounts, derived
promotion ids and zero-price lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from featurestore.ingest import IngestError, ingest_file, ingest_frames
from featurestore.schema import ENTITIES, FREE, markdown_columns
from featurestore.validate import LineNumbers, PlanError, SourceOptions, resolve_columns
from tests.featurestore.ingest_helpers import ROOT, load_products, read_rejects, rows_of, write

ORDERS = ENTITIES["orders"]


def test_names_match_whatever_their_case_and_separators() -> None:
    found = ["Order ID", "LINE", "Sku", "ordered-at", "Quantity", "UnitPrice", "Extra Col"]
    plan = resolve_columns(ORDERS, found)
    assert plan.sources == {
        "order_id": "Order ID",
        "line": "LINE",
        "sku": "Sku",
        "ordered_at": "ordered-at",
        "quantity": "Quantity",
        "unit_price": "UnitPrice",
    }
    assert plan.extras == ("Extra Col",)
    # an exact name wins over a folded one; two folded candidates are ambiguous
    exact = resolve_columns(ORDERS, ["order_id", "OrderId", "sku", "ordered_at"])
    assert exact.sources["order_id"] == "order_id" and exact.extras == ("OrderId",)
    with pytest.raises(PlanError, match="matches several source columns"):
        resolve_columns(ORDERS, ["Order ID", "order-id", "sku", "ordered_at"])


def test_ignore_reads_a_column_as_if_absent() -> None:
    found = ["order_id", "sku", "ordered_at", "Status", "Customer Email"]
    plan = resolve_columns(ORDERS, found, ignore=["status", "Customer Email"])
    assert "status" not in plan.sources and plan.extras == ()
    with pytest.raises(PlanError, match="--ignore names 'nope'"):
        resolve_columns(ORDERS, found, ignore=["nope"])
    with pytest.raises(PlanError, match="missing required column"):
        resolve_columns(ORDERS, found, ignore=["sku"])
    with pytest.raises(PlanError, match="not in the source"):
        resolve_columns(ORDERS, found, {"status": "Status"}, ignore=["Status"])


def test_a_real_export_loads_with_its_own_names_and_ignored_columns(
    engine: Engine, tmp_path: Path
) -> None:
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "shop.csv",
        """
        Order ID,Line,SKU,Ordered At,Quantity,Unit Price,Status,Customer Email
        SO-1,1,A,2024-01-05T10:00:00Z,2,10,paid,a@example.com
        SO-1,2,B,2024-01-05T10:00:00Z,1,4,pending,a@example.com
        """,
    )
    # the platform's own statuses are no order statuses
    with pytest.raises(IngestError, match="rejected"):
        ingest_file(engine, "orders", path)
    report = ingest_file(engine, "orders", path, options=SourceOptions(ignore=("Status",)))
    assert (report.status, report.rows_accepted, report.ignored_columns) == (
        "loaded",
        2,
        ["Customer Email"],
    )
    got = rows_of(
        engine,
        "SELECT order_id, line, sku, quantity, unit_price, status FROM order_lines ORDER BY line",
    )
    assert got == [
        ("SO-1", 1, "A", 2.0, 10.0, "completed"),
        ("SO-1", 2, "B", 1.0, 4.0, "completed"),
    ]


def test_products_leave_ignored_columns_out_of_their_attributes(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path / "p.csv", "SKU,NAME,colour,internal note\nA,Apple,red,x\n")
    ingest_file(engine, "products", path, options=SourceOptions(ignore=("internal note",)))
    ((name, attributes),) = rows_of(engine, "SELECT name, attributes FROM products")
    assert name == "Apple"
    assert "red" in str(attributes) and "internal" not in str(attributes)


def test_lines_are_numbered_within_their_order_when_the_source_has_none(
    engine: Engine, tmp_path: Path
) -> None:
    load_products(engine, tmp_path)
    frame = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o1", "o1", "o2", "o3"],
            "sku": ["A", "A", "B", "ZZ", "B", "A"],  # ZZ: unknown, rejected, still numbered
            "ordered_at": ["2024-01-05T10:00:00Z"] * 6,
        }
    )
    # chunks of two rows: an order's numbers continue across chunks
    report = ingest_frames(
        engine, "orders", [frame], source="no-lines", chunk_rows=2, max_reject=0.5
    )
    assert (report.status, report.rows_accepted) == ("loaded", 5)
    got = rows_of(engine, "SELECT order_id, line, sku, quantity FROM order_lines ORDER BY 1, 2")
    # quantity absent: one unit a line
    assert got == [
        ("o1", 1, "A", 1.0),
        ("o1", 2, "B", 1.0),
        ("o2", 1, "A", 1.0),
        ("o2", 2, "B", 1.0),
        ("o3", 1, "A", 1.0),
    ]
    assert rows_of(engine, "SELECT sku, units FROM daily_sales ORDER BY 1") == [
        ("A", 3.0),
        ("B", 2.0),
    ]


def test_line_numbers_continue_across_chunks() -> None:
    numbers = LineNumbers()
    first = numbers.number(pd.Series(["b", "a", "b"], dtype="str"))
    second = numbers.number(pd.Series(["a", "c", "b", "a"], dtype="str"))
    assert first.tolist() == [1, 1, 2]
    assert second.tolist() == [2, 1, 3, 3]


def test_a_present_line_column_still_needs_every_cell(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "o.csv",
        "order_id,line,sku,ordered_at\no1,1,A,2024-01-05T10:00:00Z\no1,,A,2024-01-05T10:00:00Z\n",
    )
    report = ingest_file(engine, "orders", path, max_reject=0.5)
    assert [(r["reason"], r["column"]) for r in read_rejects(report.reject_path)] == [
        ("missing value", "line")
    ]


def test_negative_lines_that_are_no_returns_are_cancellations(
    engine: Engine, tmp_path: Path
) -> None:
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "o.csv",
        """
        InvoiceNo,StockCode,InvoiceDate,Quantity,UnitPrice,Status
        536365,A,2024-01-04T10:00:00Z,3,2.5,
        C536379,A,2024-01-05T10:00:00Z,-2,2.5,
        C536380,A,2024-01-05T11:00:00Z,-1,2.5,cancelled
        R536381,A,2024-01-05T12:00:00Z,-1,2.5,returned
        """,
    )
    mapping = {"order_id": "InvoiceNo", "sku": "StockCode", "ordered_at": "InvoiceDate"}
    report = ingest_file(engine, "orders", path, mapping=mapping)
    assert (report.status, report.rows_accepted, report.rows_rejected) == ("loaded", 4, 0)
    assert rows_of(engine, "SELECT order_id, quantity, status FROM order_lines ORDER BY 1") == [
        ("536365", 3.0, "completed"),
        ("C536379", -2.0, "cancelled"),
        ("C536380", -1.0, "cancelled"),
        ("R536381", -1.0, "returned"),
    ]
    # a cancellation neither adds demand nor takes it back; a return is counted as returned
    got = rows_of(engine, "SELECT date, units, returned_units FROM daily_sales ORDER BY 1")
    assert [(str(d), u, r) for d, u, r in got] == [
        ("2024-01-04", 3.0, 0.0),
        ("2024-01-05", 0.0, 1.0),
    ]


def test_discounts_as_amounts(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "o.csv",
        """
        order_id,sku,ordered_at,quantity,unit_price,discount
        o1,A,2024-01-05T10:00:00Z,2,10,5
        o2,A,2024-01-05T10:00:00Z,2,10,25
        o3,A,2024-01-05T10:00:00Z,2,,3
        o4,A,2024-01-05T10:00:00Z,1,10,0
        """,
    )
    # as fractions (the default) an amount of 5 is refused
    fractions = ingest_file(engine, "orders", path, max_reject=1.0, reject_path=tmp_path / "f.csv")
    assert fractions.reasons["not between 0 and 1 (discount)"] == 3
    amounts = SourceOptions(discount="amount")
    report = ingest_file(engine, "orders", path, max_reject=0.5, options=amounts)
    assert (report.status, report.rows_accepted) == ("loaded", 2)
    assert [(r["row"], r["reason"]) for r in read_rejects(report.reject_path)] == [
        ("2", "discount amount above the line's value"),
        ("3", "discount amount on a line without a price"),
    ]
    assert rows_of(engine, "SELECT order_id, discount FROM order_lines ORDER BY 1") == [
        ("o1", 0.25),
        ("o4", 0.0),
    ]
    assert rows_of(engine, "SELECT revenue FROM daily_sales") == [(25.0,)]


def test_promotions_without_an_id_get_a_stable_one(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    first = write(
        tmp_path / "p1.csv",
        """
        sku,category,start_date,end_date,discount_depth
        A,,2024-04-01,2024-04-14,0.2
        ,fruit,2024-04-01,2024-04-14,0.1
        """,
    )
    assert ingest_file(engine, "promotions", first).rows_accepted == 2
    query = "SELECT coalesce(sku, category), promo_id, discount_depth FROM promotions"
    ids = {target: (promo_id, depth) for target, promo_id, depth in rows_of(engine, query)}
    assert all(i.startswith("auto-") and len(i) <= 64 for i, _ in ids.values())
    assert ids["A"][0] != ids["fruit"][0]
    # the same promotion again, deeper and in a file with a (blank) promo_id column: updated
    again = write(
        tmp_path / "p2.csv",
        "promo_id,sku,start_date,end_date,discount_depth\n,A,2024-04-01,2024-04-14,0.3\n",
    )
    assert ingest_file(engine, "promotions", again).status == "loaded"
    after = {target: (promo_id, depth) for target, promo_id, depth in rows_of(engine, query)}
    assert after == {"A": (ids["A"][0], 0.3), "fruit": ids["fruit"]}


def test_zero_price_lines_are_stored_as_free_and_counted_apart(
    engine: Engine, tmp_path: Path
) -> None:
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "o.csv",
        """
        order_id,line,sku,ordered_at,quantity,unit_price,discount
        o1,1,A,2024-01-05T10:00:00Z,2,10,0
        o1,2,A,2024-01-05T10:00:00Z,1,0,0
        o1,3,A,2024-01-05T10:00:00Z,3,10,1
        o1,4,B,2024-01-05T10:00:00Z,1,,0
        """,
    )
    assert ingest_file(engine, "orders", path).rows_accepted == 4
    statuses = rows_of(engine, "SELECT line, status FROM order_lines ORDER BY line")
    assert statuses == [(1, "completed"), (2, FREE), (3, FREE), (4, "completed")]
    daily = "SELECT sku, units, revenue FROM daily_sales ORDER BY sku"
    # a line without a price is not a zero price: it stays demand
    assert rows_of(engine, daily) == [("A", 2.0, 20.0), ("B", 1.0, None)]
    free = "SELECT count(*), sum(quantity) FROM order_lines WHERE status = 'free'"
    assert rows_of(engine, free) == [(2, 4.0)]
    # asked to, the same file loads again and counts them as demand
    counted = ingest_file(engine, "orders", path, options=SourceOptions(zero_price_demand=True))
    assert counted.status == "loaded"
    assert rows_of(engine, daily) == [("A", 6.0, 20.0), ("B", 1.0, None)]


def test_options_are_part_of_a_files_identity(tmp_path: Path) -> None:
    plain = SourceOptions()
    assert plain.fingerprint(ORDERS, None) == {}
    assert SourceOptions(discount="amount").fingerprint(ORDERS, None) == {"discount": "amount"}


def test_operations_doc_has_every_entitys_column_table() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for entity in ENTITIES.values():
        assert markdown_columns(entity) in doc, f"docs/operations.md: {entity.name} columns"
        for column in entity.columns:
            assert column.example, f"{entity.name}.{column.name} has no example"


def test_private_columns_are_the_customer_ids() -> None:
    assert {(e.name, c) for e in ENTITIES.values() for c in e.private} == {
        ("orders", "customer_id")
    }
    assert np.all([c.max_length is None for c in ORDERS.columns if c.private])
