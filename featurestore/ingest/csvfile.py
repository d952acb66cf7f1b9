"""CSV files in chunks: record-aligned byte blocks parsed by pyarrow, malformed blocks by csv.

A block always ends on a newline outside quotes, so a chunk never splits a record; a block with
a malformed record is parsed again record by record to number and reject exactly that record.
A quote that neither opens nor closes a value makes quotes uncountable: from its block on the
file is read record by record, and a quote left open refuses the file with its line number
(MalformedCsv), so no row ever disappears inside another's value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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
QUOTE, NEWLINE, RETURN = 34, 10, 13


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
    newlines = np.flatnonzero(arr == NEWLINE)
    if len(newlines) == 0:
        return -1
    quotes = np.flatnonzero(arr == QUOTE)
    closed = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    if len(closed) == 0:
        return -1
    return int(closed[0] if first else closed[-1])


class MalformedCsv(ValueError):
    """A structural CSV error no row can be rejected for (an unbalanced quote): the file is
    refused, naming the line, rather than have rows vanish into one value."""


@dataclass(frozen=True)
class Block:
    offset: int  # where it starts in the file
    data: bytes  # whole records
    whole: bool  # False: no record ends within MAX_CARRY bytes (an unbalanced quote)


# A record longer than this (a quote left open) stops the block reader: the rest of the file
# is read record by record, which finds the quote's line without holding the file in memory.
MAX_CARRY = 2 * MAX_BLOCK


def record_blocks(path: Path, offset: int, block: int) -> Iterator[Block]:
    """The file from ``offset`` in blocks of whole records (quoted newlines respected)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        carry = b""
        while True:
            data = fh.read(block)
            if not data:
                if carry.strip():
                    yield Block(offset, carry, True)
                return
            buf = carry + data
            cut = last_boundary(buf)
            if cut < 0:
                if len(buf) > MAX_CARRY:
                    yield Block(offset, b"", False)
                    return
                carry = buf
                continue
            yield Block(offset, buf[: cut + 1], True)
            offset += cut + 1
            carry = buf[cut + 1 :]


def misquoted(data: bytes, delimiter: str) -> bool:
    """True when a quote in ``data`` (whole records) neither opens a value nor closes one.

    Blocks are cut by counting quotes, and pyarrow takes any quote at a value's start as
    opening it: one stray quote would make the following lines one value, silently. Where
    every quote opens a value (after a delimiter or a line's start), closes one (before a
    delimiter or a line's end) or is doubled inside one, the count is right and pyarrow's rows
    are the file's.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(arr == QUOTE)
    if len(quotes) == 0:
        return False
    if len(quotes) % 2:
        return True
    n, sep = len(arr), ord(delimiter)
    before = arr[np.maximum(quotes - 1, 0)]
    before[quotes == 0] = NEWLINE
    after = arr[np.minimum(quotes + 1, n - 1)]
    after[quotes == n - 1] = NEWLINE
    doubled = np.zeros(len(quotes) + 1, dtype=bool)
    doubled[1:-1] = quotes[1:] == quotes[:-1] + 1  # doubled[i + 1]: quote i + 1 follows quote i
    opens = (before == sep) | (before == NEWLINE) | doubled[:-1]
    closes = (after == sep) | (after == NEWLINE) | (after == RETURN) | doubled[1:]
    opening = np.arange(len(quotes)) % 2 == 0
    return bool(np.any(np.where(opening, ~opens, ~closes)))


def csv_chunks(
    path: Path,
    names: list[str],
    delimiter: str,
    offset: int,
    block: int,
    plan: ColumnPlan,
    extras: Sequence[str],
    chunk_rows: int,
) -> Iterator[Chunk]:
    columns = wanted(plan, extras)
    reader = _Records(names, delimiter, columns, plan, extras)
    with open(path, "rb") as fh:
        line = fh.read(offset).count(b"\n")  # lines before the data (the header's)
    for part in record_blocks(path, offset, block):
        if not part.whole or misquoted(part.data, delimiter):
            # From here on the quotes cannot be counted: Python's csv module reads the rest
            # record by record (strict: a quote it cannot place refuses the file).
            with open(path, "rb") as fh:
                fh.seek(part.offset)
                text = io.TextIOWrapper(fh, encoding="latin-1", newline="")
                yield from reader.chunks(text, line, chunk_rows)
            return
        data = part.data
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
            # Parse a block with malformed rows record by record, to number and reject them.
            # latin-1 maps every byte to one character: undecodable bytes survive to be found.
            block_text = io.StringIO(data.decode("latin-1"), newline="")
            chunk = next(reader.chunks(block_text, line, None))
        else:
            rows = np.arange(reader.row + 1, reader.row + table.num_rows + 1, dtype=np.int64)
            arrays, bad = decode_columns(table.columns, table.column_names)
            chunk = split_undecodable(
                pa.Table.from_arrays(arrays, names=columns), rows, bad, plan, extras
            )
            reader.row += table.num_rows
        line += data.count(b"\n")
        yield chunk


class _Records:
    """Records parsed one by one by Python's csv module (strict about quotes), numbered on
    from the rows before them: ragged records and undecodable cells become rejects."""

    def __init__(
        self,
        names: list[str],
        delimiter: str,
        columns: list[str],
        plan: ColumnPlan,
        extras: Sequence[str],
    ) -> None:
        self.names, self.delimiter, self.columns = names, delimiter, columns
        self.plan, self.extras = plan, extras
        self.index = [names.index(n) for n in columns]
        self.row = 0  # data rows read so far

    def empty(self) -> Chunk:
        raw = pd.DataFrame({n: pd.Series(dtype="str") for n in self.columns})
        return Chunk(planned(raw, self.plan, self.extras), np.empty(0, np.int64), empty_rejects())

    def chunks(self, text: IO[str], line: int, size: int | None) -> Iterator[Chunk]:
        """Chunks of ``size`` records (None: all) of ``text``, whose first line is ``line`` + 1
        of the file."""
        reader = csv.reader(text, delimiter=self.delimiter, strict=True)
        kept: list[list[str | None]] = []
        kept_rows: list[int] = []
        rejects: list[pd.DataFrame] = []
        while True:
            at = line + reader.line_num + 1  # the file line the next record starts on
            try:
                record = next(reader, None)
            except csv.Error as exc:
                raise MalformedCsv(_structural(at, str(exc))) from None
            if record is None:
                break
            if not record:
                continue
            self.row += 1
            reject = self._reject(record)
            if reject is None:
                kept.append([record[i].encode("latin-1").decode("utf-8") for i in self.index])
                kept_rows.append(self.row)
            else:
                rejects.append(reject)
            if size is not None and len(kept) + len(rejects) >= size:
                yield self._chunk(kept, kept_rows, rejects)
                kept, kept_rows, rejects = [], [], []
        if kept or rejects or size is None:
            yield self._chunk(kept, kept_rows, rejects)

    def _reject(self, record: list[str]) -> pd.DataFrame | None:
        rows = np.array([self.row])
        if len(record) != len(self.names):
            text = self.delimiter.join(record).encode("latin-1").decode("utf-8", errors="replace")
            return make_rejects(
                rows, MALFORMED, "", [f"{len(record)} fields, expected {len(self.names)}: {text}"]
            )
        for name, i in zip(self.columns, self.index, strict=True):
            cell = record[i].encode("latin-1")
            try:
                cell.decode("utf-8")
            except UnicodeDecodeError:
                column = next((t for t, s in self.plan.sources.items() if s == name), name)
                shown = cell.decode("utf-8", errors="backslashreplace")
                return make_rejects(rows, UNDECODABLE, column, [shown])
        return None

    def _chunk(
        self, kept: list[list[str | None]], rows: list[int], rejects: list[pd.DataFrame]
    ) -> Chunk:
        if not kept:
            chunk = self.empty()
        else:
            raw = pd.DataFrame(kept, columns=self.columns, dtype="str")
            chunk = Chunk(
                planned(raw, self.plan, self.extras),
                np.asarray(rows, dtype=np.int64),
                empty_rejects(),
            )
        chunk.rejects = pd.concat(rejects, ignore_index=True) if rejects else empty_rejects()
        return chunk


def _structural(line: int, error: str) -> str:
    """The message refusing a file for a quote that cannot be placed."""
    if "field limit" in error:
        what = "a quoted value runs on for over 131,072 characters: a quote left open"
    elif "end of data" in error:
        what = "a quoted value is never closed: a quote left open"
    else:
        what = f"a quote neither opens nor closes a value ({error})"
    return (
        f"line {line:,}: {what}; nothing loaded (a quoted value starts and ends with a quote "
        'and doubles the quotes inside it, as in "12"" screen")'
    )
