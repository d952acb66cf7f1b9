"""CSV files in chunks: record-aligned byte blocks parsed by pyarrow, malformed blocks by csv.

A block always ends on a newline outside quotes, so a chunk never splits a record; a block with
a malformed record is parsed again record by record to number and reject exactly that record.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from featurestore.ingest.chunks import Chunk, decode_columns, planned, split_undecodable, wanted
from featurestore.validate import (
    MALFORMED,
    UNDECODABLE,
    ColumnPlan,
    PlanError,
    empty_rejects,
    make_rejects,
)

MIN_BLOCK = 1 << 20
MAX_BLOCK = 64 << 20


def csv_header(path: Path) -> tuple[list[str], str, int, bytes]:
    """Column names, delimiter, the byte offset where data starts and a sample of the data."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        while True:
            cut = last_boundary(head, first=True)
            if cut >= 0:
                break
            more = fh.read(1 << 16)
            if not more:
                cut = len(head) - 1
                break
            head += more
        sample = head + fh.read(1 << 16)
    bom = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    line = head[bom : cut + 1].decode("utf-8", errors="replace").rstrip("\r\n")
    if not line.strip():
        raise PlanError("the file is empty: no header row")
    delimiter = max((",", ";", "\t", "|"), key=line.count)
    names = [n.strip() for n in next(csv.reader([line], delimiter=delimiter))]
    return names, delimiter, cut + 1, sample[cut + 1 :]


def block_bytes(sample: bytes, chunk_rows: int) -> int:
    """Bytes per block for about ``chunk_rows`` records, judged by the sample's lines."""
    lines = max(sample.count(b"\n"), 1)
    per_row = max(len(sample) / lines, 8.0)
    return int(min(max(chunk_rows * per_row, MIN_BLOCK), MAX_BLOCK))


def last_boundary(data: bytes, *, first: bool = False) -> int:
    """Index of the last (or first) newline outside quotes, -1 if none; data starts a record."""
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    if len(newlines) == 0:
        return -1
    quotes = np.flatnonzero(arr == 34)
    closed = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    if len(closed) == 0:
        return -1
    return int(closed[0] if first else closed[-1])


def record_blocks(path: Path, offset: int, block: int) -> Iterator[bytes]:
    """The file from ``offset`` in blocks of whole records (quoted newlines respected)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        carry = b""
        while True:
            data = fh.read(block)
            if not data:
                if carry.strip():
                    yield carry
                return
            buf = carry + data
            cut = last_boundary(buf)
            if cut < 0:
                carry = buf
                continue
            yield buf[: cut + 1]
            carry = buf[cut + 1 :]


def csv_chunks(
    path: Path,
    names: list[str],
    delimiter: str,
    offset: int,
    block: int,
    plan: ColumnPlan,
    extras: Sequence[str],
) -> Iterator[Chunk]:
    columns = wanted(plan, extras)
    start = 0
    for data in record_blocks(path, offset, block):
        invalid: list[Any] = []

        def skip(row: Any, invalid: list[Any] = invalid) -> str:
            invalid.append(row)
            return "skip"

        table = pcsv.read_csv(
            io.BytesIO(data),
            read_options=pcsv.ReadOptions(column_names=names, block_size=len(data) + 1),
            parse_options=pcsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=skip
            ),
            convert_options=pcsv.ConvertOptions(
                include_columns=columns,
                column_types={n: pa.string() for n in columns},
                check_utf8=False,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if invalid:
            chunk = _fallback(data, names, delimiter, columns, start, plan, extras)
        else:
            rows = np.arange(start + 1, start + table.num_rows + 1, dtype=np.int64)
            arrays, bad = decode_columns(table.columns, table.column_names)
            chunk = split_undecodable(
                pa.Table.from_arrays(arrays, names=columns), rows, bad, plan, extras
            )
        start += chunk.size
        yield chunk


def _fallback(
    data: bytes,
    names: list[str],
    delimiter: str,
    columns: list[str],
    start: int,
    plan: ColumnPlan,
    extras: Sequence[str],
) -> Chunk:
    """Parse a block with malformed rows record by record, to number and reject them exactly."""
    # latin-1 maps every byte to one character, so undecodable bytes survive to be found below.
    reader = csv.reader(io.StringIO(data.decode("latin-1"), newline=""), delimiter=delimiter)
    index = {n: i for i, n in enumerate(names)}
    kept: list[list[str | None]] = []
    kept_rows: list[int] = []
    rejects: list[pd.DataFrame] = []
    row = start
    for record in reader:
        if not record:
            continue
        row += 1
        if len(record) != len(names):
            text = delimiter.join(record).encode("latin-1").decode("utf-8", errors="replace")
            rejects.append(
                make_rejects(
                    np.array([row]),
                    MALFORMED,
                    "",
                    [f"{len(record)} fields, expected {len(names)}: {text}"],
                )
            )
            continue
        cells: list[str | None] = []
        broken = None
        for name in columns:
            cell = record[index[name]].encode("latin-1")
            try:
                cells.append(cell.decode("utf-8"))
            except UnicodeDecodeError:
                broken = name, cell.decode("utf-8", errors="backslashreplace")
                break
        if broken is not None:
            column = next((t for t, s in plan.sources.items() if s == broken[0]), broken[0])
            rejects.append(make_rejects(np.array([row]), UNDECODABLE, column, [broken[1]]))
            continue
        kept.append(cells)
        kept_rows.append(row)
    raw = (
        pd.DataFrame(kept, columns=columns, dtype="str")
        if kept
        else pd.DataFrame({n: pd.Series(dtype="str") for n in columns})
    )
    merged = pd.concat(rejects, ignore_index=True) if rejects else empty_rejects()
    return Chunk(planned(raw, plan, extras), np.asarray(kept_rows, dtype=np.int64), merged)
