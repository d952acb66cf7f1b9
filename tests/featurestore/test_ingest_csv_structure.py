"""Structural CSV errors never swallow rows: the rows read are the file's, or it is refused."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from featurestore.ingest import IngestError, csvfile, ingest_file
from tests.featurestore.ingest_helpers import load_products, read_rejects, rows_of, snapshot

ROWS = 60_000  # about 1.3 MB: more than one block, and far past csv's 131,072-character field


SKUS = tuple(f"S{i}" for i in range(60))


def sales_file(path: Path, stray: dict[int, str]) -> Path:
    """Daily sales of 60 SKUs, one (SKU, day) per row; ``stray`` replaces data rows (1-based)."""
    lines = ["sku,date,units"]
    first = date(2020, 1, 1)
    for i in range(1, ROWS + 1):
        day = first + timedelta(days=i // len(SKUS))
        lines.append(stray.get(i, f"{SKUS[i % len(SKUS)]},{day},{i % 7}"))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("row", [59_901, 5], ids=["late", "early"])
def test_a_quote_left_open_refuses_the_file_with_its_line(
    engine: Engine, tmp_path: Path, row: int
) -> None:
    load_products(engine, tmp_path, SKUS)
    path = sales_file(tmp_path / "sales.csv", {row: 'S1,2020-02-02,"3'})
    before = snapshot(engine)
    with pytest.raises(IngestError, match=rf"line {row + 1:,}: .*quote left open") as raised:
        ingest_file(engine, "sales", path, max_reject=0.5)
    assert "field limit" not in str(raised.value)
    assert snapshot(engine) == before  # nothing loaded, no row swallowed into a reject
    (status, detail) = rows_of(
        engine, "SELECT status, detail FROM ingestion_log WHERE entity = 'sales'"
    )[0]
    assert status == "failed" and f"line {row + 1:,}" in json.loads(detail)["message"]


def test_a_stray_quote_closed_by_a_later_one_refuses_the_file(
    engine: Engine, tmp_path: Path
) -> None:
    # pyarrow alone would read rows 30,001 to 30,004 as one value and report no error
    load_products(engine, tmp_path, SKUS)
    stray = {30_001: 'S1,2020-02-02,"3', 30_004: 'S1,2020-02-05,"4"x'}
    path = sales_file(tmp_path / "sales.csv", stray)
    with pytest.raises(IngestError, match=r"line 30,002: a quote neither opens nor closes"):
        ingest_file(engine, "sales", path, max_reject=0.5)
    assert rows_of(engine, "SELECT count(*) FROM daily_sales") == [(0,)]


def test_quotes_inside_values_and_ragged_rows_keep_every_row(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A quote inside an unquoted value is a character of it (as pyarrow and Python's csv read
    # it); from its block on, records are read one by one, quoted newlines and all.
    monkeypatch.setattr(csvfile, "MIN_BLOCK", 64)  # a block is a few records
    lines = ["sku,name,category"]
    names = {}
    for i in range(1, 201):
        if i == 20:
            line, names[f"S{i}"] = f'S{i},12" screen,c', '12" screen'
        elif i % 30 == 0:
            line, names[f"S{i}"] = f'S{i},"two\nlines, ""x""",c', 'two\nlines, "x"'
        elif i == 77:
            line = f"S{i},ragged,row,here"
        else:
            line, names[f"S{i}"] = f"S{i},n{i},c", f"n{i}"
        lines.append(line)
    path = tmp_path / "p.csv"
    path.write_text("\n".join(lines) + "\n")
    report = ingest_file(engine, "products", path, chunk_rows=7, max_reject=0.1)
    assert (report.rows_read, report.rows_accepted, report.rows_rejected) == (200, 199, 1)
    assert [(r["row"], r["reason"]) for r in read_rejects(report.reject_path)] == [
        ("77", "wrong number of fields")
    ]
    stored = dict(rows_of(engine, "SELECT sku, name FROM products"))
    assert stored == names


def test_misquoted_blocks() -> None:
    ok = [b"a,b\n", b'"a","b"\n', b'a,"x ""y"", z"\n', b'"",""\r\n', b'a,"two\nlines"\n']
    for data in ok:
        assert not csvfile.misquoted(data, ","), data
    bad = [b'a,b"\n', b'a,"x\n', b'a,"x"y\n', b'a, "x"\n', b'a;"x";b"\n']
    for data in bad:
        assert csvfile.misquoted(data, "," if b";" not in data else ";"), data
