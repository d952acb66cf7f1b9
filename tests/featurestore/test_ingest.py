"""Ingestion: every entity, column mapping, idempotency, the per-entity table and crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sqlalchemy import Engine

from featurestore.ingest import IngestError, IngestReport, ingest_file, ingest_frames
from tests.featurestore.ingest_helpers import (
    DATA_TABLES,
    ROOT,
    load_products,
    rows_of,
    snapshot,
    write,
)


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


def test_every_schema_entity_declares_its_ingestion() -> None:
    # A new entity needs its columns in featurestore.schema and one entry in the ingest table.
    from featurestore.ingest.entities import INGEST_ENTITIES
    from featurestore.schema import ENTITIES

    assert set(INGEST_ENTITIES) == set(ENTITIES)
    for name, spec in INGEST_ENTITIES.items():
        if spec.stored_keys is not None:
            assert spec.bulk_append and spec.before_upsert, name
        if spec.totals is not None:
            assert spec.direct_first_load, name
