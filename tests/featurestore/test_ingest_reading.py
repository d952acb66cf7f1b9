"""Reading sources: undecodable bytes, record-aligned CSV blocks, row estimates, prefetching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine

from featurestore.ingest import TooManyRejects, csvfile, estimate_rows, ingest_file, reading
from tests.featurestore.ingest_helpers import LONG, read_rejects, rows_of, snapshot, write


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


def test_estimate_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "a,b\n1,2\n3,4")
    assert estimate_rows(path) == 2
    pd.DataFrame({"a": range(5)}).to_parquet(tmp_path / "a.parquet")
    assert estimate_rows(tmp_path / "a.parquet") == 5


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
