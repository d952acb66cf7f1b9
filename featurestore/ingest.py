"""Validated, transactional, idempotent ingestion of CSV and Parquet files and generated frames.

One file is one transaction. Its sha256 (with the column mapping) is looked up first: a file this
entity already loaded changes nothing and reports "unchanged". Otherwise the file is read in
chunks (CSV: record-aligned byte blocks parsed by pyarrow; Parquet: row batches), renamed by
``mapping``, validated vectorised (featurestore.validate) and the accepted rows are staged in a
temporary table (COPY on PostgreSQL, executemany on SQLite). Keys found more than once in the file
are rejected, every copy. When the reject share stays within ``max_reject`` the staged rows are
upserted into the target table, order lines are turned into daily sales, first/last sale dates
are refreshed and the ingestion_log row is written; then the transaction commits. A crash at any
point before that commit leaves the store as it was. Rejects (1-based data row, reason, column,
value) go to a CSV file, by default ``<file>.rejects.csv`` next to the input.

Order lines become daily_sales rows (source "orders"), recomputed in SQL from all order lines in
the store for every (sku, day) a file touches, including the old day of a line that moved:

- sale_date: ordered_at as a day in settings.timezone; a timestamp without an offset is local time.
- units: quantity of lines with quantity > 0 and status completed or returned (a line returned
  later was still demand on its day); cancelled lines count for nothing.
- returned_units: |quantity| of returned lines, i.e. positive lines returned later and negative
  return lines (a negative quantity is accepted only with status returned).
- revenue: quantity * unit_price * (1 - discount) summed over completed lines.
- avg_price: the realised price of the day's demand, sum(quantity * unit_price * (1 - discount))
  / sum(quantity) over priced completed and returned lines (revenue / units would count returned
  units at price zero and bias the price signal downwards).

order_lines.sku and daily_sales.sku have no foreign key (migrations 0003 and 0004): every SKU of
an order or sales file is checked against products once, inside the load's own transaction, and
rejected as "unknown sku" when absent, and products are never deleted, so the per-row triggers
only cost time. Code that writes these tables other than through this module must check SKUs
itself.

Bulk paths on PostgreSQL (each holds ACCESS EXCLUSIVE on the table it rebuilds until commit):
- The first order file (order_lines empty) is copied straight into order_lines with its indexes
  dropped: no stage, no upsert; duplicate keys found at the end are deleted again, the daily
  sales come from one aggregate over the table and the indexes are built once.
- A later order file with at least half as many rows as the table is appended with the table's
  indexes dropped and rebuilt; smaller files are upserted.
- Derived daily sales at least half as many as daily_sales' rows are appended the same way.
The rows go through one COPY per file, fed by a writer thread while this thread parses and
validates the next chunk.

A day whose lines were all cancelled keeps a row with 0 units. For one SKU and day the later
load wins between order-derived and directly loaded daily sales. first_sale_date and
last_sale_date of a touched SKU are its first and last day with units > 0.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import heapq
import io
import json
import os
import queue
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    Table,
    insert,
    select,
)
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

from featurestore import m5
from featurestore.config import get_settings
from featurestore.schema import ENTITIES, Entity
from featurestore.tables import Base, IngestionLog
from featurestore.validate import (
    DEFAULTS,
    DUPLICATE,
    MALFORMED,
    REJECT_COLUMNS,
    UNDECODABLE,
    ColumnPlan,
    Context,
    PlanError,
    Rows,
    check_chunk,
    empty_rejects,
    make_rejects,
    resolve_columns,
)

__all__ = [
    "IngestError",
    "IngestReport",
    "TooManyRejects",
    "estimate_rows",
    "file_checksum",
    "import_m5",
    "ingest_file",
    "ingest_frames",
]

Progress = Callable[[int], None]

_HASH_BLOCK = 1 << 20
_MIN_BLOCK = 1 << 20
_MAX_BLOCK = 64 << 20
_IN_BATCH = 500
_PARQUET_MAGIC = b"PAR1"
_STAGE_EXTRA = {"orders": (("sale_date", "date"),)}
_SALE_ENTITIES = ("orders", "sales")
_ANALYZE_ROWS = 100_000
# PostgreSQL order lines: a file with at least this share of the table's rows (and at least
# _REBUILD_MIN_ROWS) is appended with the table's indexes dropped and built again afterwards.
_REBUILD_SHARE = 0.5
_REBUILD_MIN_ROWS = 50_000


@dataclass
class IngestReport:
    """What one ingestion read, accepted and rejected, and how it ended."""

    entity: str
    source: str
    checksum: str
    rows_read: int
    rows_accepted: int
    rows_rejected: int
    status: str  # "loaded" | "unchanged" (same file already loaded) | "failed"
    reject_path: Path | None
    reasons: dict[str, int]  # reject reason -> count
    seconds: float
    ignored_columns: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def reject_share(self) -> float:
        return self.rows_rejected / self.rows_read if self.rows_read else 0.0


class IngestError(Exception):
    """A file-level failure: unreadable file, missing required columns, too many rejects."""


class TooManyRejects(IngestError):
    """The reject share passed max_reject: nothing was written."""

    def __init__(self, report: IngestReport, max_reject: float) -> None:
        super().__init__(
            f"{report.rows_rejected:,} of {report.rows_read:,} rows rejected "
            f"({report.reject_share:.1%}, more than the {max_reject:.1%} allowed); nothing loaded"
        )
        self.report = report
        self.max_reject = max_reject


class _Unchanged(Exception):
    """Generated frames whose content this entity already loaded."""

    def __init__(self, previous: IngestionLog | None) -> None:
        self.previous = previous


@dataclass
class _Chunk:
    frame: pd.DataFrame  # entity column names (and, for products, extra source columns)
    rows: Rows  # 1-based data row of each frame row
    rejects: pd.DataFrame  # rows refused while reading (malformed, undecodable)

    @property
    def size(self) -> int:
        return len(self.frame) + len(self.rejects)


# ---------------------------------------------------------------------------------------------
# public entry points


def ingest_file(
    engine: Engine,
    entity: str,
    path: Path,
    *,
    mapping: dict[str, str] | None = None,
    max_reject: float | None = None,
    reject_path: Path | None = None,
    chunk_rows: int | None = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Load one CSV or Parquet file of ``entity`` in one transaction (see the module docstring)."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    ent = _entity(entity)
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise IngestError(f"no such file: {path}")
    checksum = file_checksum(path, mapping)
    previous = _previous_load(engine, ent.name, checksum)
    if previous is not None:
        report = _unchanged_report(ent.name, source, checksum, previous, started)
        _log_outside(engine, report, started_at)
        return report
    rows = chunk_rows or get_settings().ingest_chunk_rows
    target = reject_path or _default_reject_path(path)
    try:
        plan, chunks = _open_file(path, ent, mapping, rows)
    except (PlanError, OSError, pa.ArrowException, csv.Error, ValueError) as exc:
        _fail(engine, ent.name, source, checksum, started, started_at, str(exc))
        raise IngestError(f"{path.name}: {exc}") from exc
    return _load(
        engine,
        ent,
        plan,
        chunks,
        source=source,
        checksum=checksum,
        max_reject=max_reject,
        reject_path=target,
        stale_rejects=reject_path is None,
        progress=progress,
        started=(started, started_at),
    )


def ingest_frames(
    engine: Engine,
    entity: str,
    frames: Iterable[pd.DataFrame],
    *,
    source: str,
    max_reject: float | None = None,
    reject_path: Path | None = None,
    progress: Progress | None = None,
    chunk_rows: int | None = None,
) -> IngestReport:
    """Load generated frames (entity column names) through the same validation and transaction."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    ent = _entity(entity)
    rows = chunk_rows or get_settings().ingest_chunk_rows
    target = reject_path or _data_reject_path(f"{source}.{ent.name}")
    if isinstance(frames, pd.DataFrame):  # iterating a frame would yield its column names
        frames = [frames]
    iterator = iter(frames)
    first = next(iterator, None)
    columns = list(first.columns) if first is not None else list(ent.required)
    try:
        plan = resolve_columns(ent, [str(c) for c in columns])
    except PlanError as exc:
        raise IngestError(f"{source}: {exc}") from exc

    checksum = None
    if isinstance(frames, Sequence):
        # Frames already in memory: hash them first, so a repeat skips validation and staging.
        content = _ContentHash()
        for frame in frames:
            content.update(_planned(frame, plan, ent))
        checksum = content.hexdigest()
        previous = _previous_load(engine, ent.name, checksum)
        if previous is not None:
            report = _unchanged_report(ent.name, source, checksum, previous, started)
            _log_outside(engine, report, started_at)
            return report

    def chunks() -> Iterator[_Chunk]:
        start = 0
        for frame in _chain(first, iterator):
            for lo in range(0, len(frame), rows):
                part = _planned(frame.iloc[lo : lo + rows], plan, ent)
                yield _Chunk(part, np.arange(start + 1, start + len(part) + 1), empty_rejects())
                start += len(part)

    return _load(
        engine,
        ent,
        plan,
        chunks(),
        source=source,
        checksum=checksum,
        max_reject=max_reject,
        reject_path=target,
        stale_rejects=False,
        progress=progress,
        started=(started, started_at),
    )


def import_m5(
    engine: Engine, path: Path, progress: Progress | None = None
) -> dict[str, IngestReport]:
    """Load an M5-layout Parquet file: products, events and SNAP days, prices, daily sales."""
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"no such file: {path}")
    try:
        frames = m5.m5_frames(path)
    except (KeyError, OSError, pa.ArrowException) as exc:
        raise IngestError(f"{path.name} is not an M5-layout file: {exc}") from exc
    return {
        entity: ingest_frames(engine, entity, [frame], source=f"{path}#{entity}", progress=progress)
        for entity, frame in frames.items()
    }


def file_checksum(path: Path, mapping: Mapping[str, str] | None = None) -> str:
    """sha256 of the file's bytes, folded with the column mapping when there is one."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    if not mapping:
        return digest.hexdigest()
    folded = hashlib.sha256(digest.hexdigest().encode())
    folded.update(json.dumps(dict(sorted(mapping.items()))).encode())
    return folded.hexdigest()


def estimate_rows(path: Path) -> int | None:
    """Data rows in a file: exact for Parquet, newlines minus the header for CSV."""
    path = Path(path)
    try:
        if _is_parquet(path):
            return int(pq.ParquetFile(path).metadata.num_rows)
        lines, last = 0, b""
        with open(path, "rb") as fh:
            while block := fh.read(_HASH_BLOCK):
                lines += block.count(b"\n")
                last = block
        if last and not last.endswith(b"\n"):
            lines += 1
        return max(lines - 1, 0)
    except (OSError, pa.ArrowException):
        return None


# ---------------------------------------------------------------------------------------------
# the transaction


def _load(
    engine: Engine,
    ent: Entity,
    plan: ColumnPlan,
    chunks: Iterable[_Chunk],
    *,
    source: str,
    checksum: str | None,
    max_reject: float | None,
    reject_path: Path,
    stale_rejects: bool,
    progress: Progress | None,
    started: tuple[float, datetime],
) -> IngestReport:
    settings = get_settings()
    limit = settings.max_reject_share if max_reject is None else max_reject
    sink = _RejectSink(reject_path)
    hasher = _ContentHash() if checksum is None else None
    extras = list(plan.extras) if ent.name == "products" else []
    report = IngestReport(
        ent.name,
        source,
        checksum or "",
        0,
        0,
        0,
        "failed",
        None,
        {},
        0.0,
        ignored_columns=[] if ent.name == "products" else list(plan.extras),
    )
    try:
        with (
            engine.begin() as conn,
            _Store(conn, ent, plan, extras) as store,
            contextlib.ExitStack() as stack,
        ):
            ctx = Context(
                today=datetime.now(ZoneInfo(settings.timezone)).date(),
                timezone=settings.timezone,
                known_skus=store.known_skus(),
                present=plan.present,
            )
            keys = stack.enter_context(_KeyIndex(ent))
            for chunk in chunks:
                if hasher is not None:
                    hasher.update(chunk.frame)
                checked = check_chunk(ent, chunk.frame, chunk.rows, ctx, extras)
                sink.add(_merge_rejects(chunk.rejects, checked.rejects))
                store.write(checked.frame)
                keys.add(checked.frame)
                report.rows_read += chunk.size
                if progress is not None:
                    progress(chunk.size)
            store.finish_staging()
            if hasher is not None:
                report.checksum = hasher.hexdigest()
                previous = _previous_load_in(conn, ent.name, report.checksum)
                if previous is not None:
                    raise _Unchanged(previous)
            duplicates = keys.duplicates()
            sink.add_late(_duplicate_rejects(duplicates, ent))
            store.drop(duplicates)
            report.rows_rejected = sink.count
            report.rows_accepted = report.rows_read - report.rows_rejected
            report.reasons = dict(sink.reasons.most_common())
            report.reject_path = sink.path if sink.count else None
            if report.reject_share > limit:
                raise TooManyRejects(report, limit)
            store.merge()
            report.status = "loaded"
            report.seconds = time.perf_counter() - started[0]
            store.log(report, started[1])
    except _Unchanged as unchanged:
        sink.discard()
        report = _unchanged_report(
            ent.name, source, report.checksum, unchanged.previous, started[0]
        )
        _log_outside(engine, report, started[1])
        return report
    except TooManyRejects as exc:
        sink.finish(stale=stale_rejects)
        exc.report.seconds = time.perf_counter() - started[0]
        _log_outside(engine, exc.report, started[1])
        raise
    except (PlanError, OSError, pa.ArrowException, csv.Error, UnicodeError, ValueError) as exc:
        sink.discard()
        _fail(engine, ent.name, source, report.checksum, started[0], started[1], str(exc))
        raise IngestError(f"{Path(source).name}: {exc}") from exc
    except BaseException:
        sink.discard()
        raise
    report.reject_path = sink.finish(stale=stale_rejects)
    return report


def _merge_rejects(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    if first.empty:
        return second
    if second.empty:
        return first
    return pd.concat([first, second], ignore_index=True).sort_values("row", kind="stable")


class _KeyIndex:
    """Every accepted row's key, to find keys a file holds more than once.

    64-bit hashes and row numbers stay in memory (16 bytes a row); the keys themselves are
    spilled to a temporary Arrow file, so that at the end only the rows whose hash occurs twice
    are read back and compared exactly, without asking the database.
    """

    def __init__(self, ent: Entity) -> None:
        self.key = list(ent.key)
        self.hashes: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self._spill: Any = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def __enter__(self) -> _KeyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        parts = {}
        for name in self.key:
            col = frame[name]
            if pd.api.types.is_datetime64_any_dtype(col.dtype):
                parts[name] = col.astype("datetime64[s]").astype("int64")
            else:
                parts[name] = col
        keys = pd.DataFrame(parts)
        hashed = pd.util.hash_pandas_object(keys, index=False)
        self.hashes.append(hashed.to_numpy(dtype=np.uint64))
        rows = frame["_row"].to_numpy(dtype=np.int64)
        self.rows.append(rows)
        arrays = [pa.array(rows)]
        for name in self.key:
            if pd.api.types.is_numeric_dtype(keys[name].dtype):
                arrays.append(pa.array(keys[name].to_numpy(dtype=np.int64)))
            else:
                arrays.append(_flat(pa.array(keys[name], type=pa.large_string(), from_pandas=True)))
        batch = pa.RecordBatch.from_arrays(arrays, names=["_row", *self.key])
        if self._writer is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self._writer = pa.ipc.new_stream(self._spill, batch.schema)
        self._writer.write_batch(batch)

    def _candidates(self) -> np.ndarray:
        """Rows whose key hash occurs more than once."""
        if not self.hashes:
            return np.empty(0, dtype=np.int64)
        hashes = np.concatenate(self.hashes)
        rows = np.concatenate(self.rows)
        self.hashes, self.rows = [], []
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        same = ordered[1:] == ordered[:-1]
        hit = np.zeros(len(ordered), dtype=bool)
        hit[1:] |= same
        hit[:-1] |= same
        return np.sort(rows[order][hit])

    def duplicates(self) -> pd.DataFrame:
        """``_row`` and key of every row whose exact key another row of the file also has."""
        candidates = self._candidates()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        found = pd.DataFrame({"_row": pd.Series(dtype="int64")})
        if len(candidates) and self._spill is not None:
            self._spill.seek(0)
            wanted = pa.array(candidates)
            parts = [
                batch.filter(pc.is_in(batch.column(0), value_set=wanted)).to_pandas()
                for batch in pa.ipc.open_stream(self._spill)
            ]
            found = pd.concat(parts, ignore_index=True)
        self.close()
        if found.empty:
            return found
        return found[found.duplicated(subset=self.key, keep=False)].sort_values("_row")


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (pandas columns built by concatenation convert to chunked ones)."""
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _duplicate_rejects(dup: pd.DataFrame, ent: Entity) -> pd.DataFrame:
    key = list(ent.key)
    if dup.empty:
        return empty_rejects()
    shown = pd.DataFrame(index=dup.index)
    for name in key:
        kind = next(c.kind for c in ent.columns if c.name == name)
        if kind == "date":  # keys hold days as seconds since the epoch
            shown[name] = pd.to_datetime(dup[name], unit="s").dt.strftime("%Y-%m-%d")
        else:
            shown[name] = dup[name].astype(str)
    values = shown.agg("|".join, axis=1).tolist()
    return make_rejects(dup["_row"].to_numpy(), DUPLICATE, ",".join(key), values)


class _ContentHash:
    """sha256 of frames' column names and row hashes: the same rows give the same digest
    however they are split into frames."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.columns: list[str] | None = None

    def update(self, frame: pd.DataFrame) -> None:
        columns = [str(c) for c in frame.columns]
        if columns != self.columns:
            self.digest.update(json.dumps(columns).encode())
            self.columns = columns
        try:
            hashed = pd.util.hash_pandas_object(frame, index=False)
        except TypeError:  # unhashable cells (dicts of attributes): hash their text instead
            hashed = pd.util.hash_pandas_object(frame.astype(str), index=False)
        self.digest.update(hashed.to_numpy(dtype=np.uint64).tobytes())

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# the database side: staging, duplicates, merge, derived sales, log


_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
    "json": pa.string(),
}


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_PG_EPOCH_DAYS = 10_957
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", type=pa.binary())  # length -1


def _binary_type(sqltype: Any) -> str:
    """How a column's values travel in binary COPY."""
    if isinstance(sqltype, BigInteger):
        return "int8"
    if isinstance(sqltype, Integer):
        return "int4"
    if isinstance(sqltype, Float):
        return "float8"
    if isinstance(sqltype, DateTime):
        return "timestamp"
    if isinstance(sqltype, Date):
        return "date"
    if isinstance(sqltype, Boolean):
        return "bool"
    return "text"  # varchar, text and json take their UTF-8 text


def _fixed_width(items: np.ndarray, itemsize: int) -> pa.Array:
    """A binary array whose every value is ``itemsize`` bytes of ``items``' buffer."""
    offsets = np.arange(len(items) + 1, dtype=np.int32) * itemsize
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(items), [None, pa.py_buffer(offsets), pa.py_buffer(items)]
    )


def _binary_fields(arr: pa.Array, kind: str) -> list[pa.Array]:
    """One column as binary COPY fields (int32 big-endian length, then the value)."""
    valid = None if arr.null_count == 0 else arr.is_valid()
    if kind == "text":
        data = arr.cast(pa.string())
        if valid is not None:
            data = pc.fill_null(data, "")
        lengths = pc.binary_length(data).to_numpy(zero_copy_only=False).astype(">i4")
        if valid is not None:
            lengths[~valid.to_numpy(zero_copy_only=False)] = -1
        return [_fixed_width(lengths, 4), data.cast(pa.binary())]
    if kind == "timestamp":
        micros = arr.cast(pa.timestamp("us", getattr(arr.type, "tz", None))).cast(pa.int64())
        values, dtype = micros.fill_null(0).to_numpy() - _PG_EPOCH_US, ">i8"
    elif kind == "date":
        values, dtype = arr.cast(pa.int32()).fill_null(0).to_numpy() - _PG_EPOCH_DAYS, ">i4"
    else:
        width = {
            "int4": (pa.int32(), ">i4"),
            "int8": (pa.int64(), ">i8"),
            "float8": (pa.float64(), ">f8"),
            "bool": (pa.uint8(), "u1"),
        }
        target, dtype = width[kind]
        values = arr.cast(target).fill_null(0).to_numpy()
    block = np.empty(len(arr), dtype=[("len", ">i4"), ("value", dtype)])
    block["len"] = np.dtype(dtype).itemsize
    block["value"] = values
    field = _fixed_width(block, block.dtype.itemsize)
    if valid is not None:
        field = pc.if_else(valid, field, _NULL_FIELD)
    return [field]


def _binary_rows(table: pa.Table, kinds: Sequence[str]) -> pa.Buffer:
    """A table's rows in PostgreSQL's binary COPY format (without signature and trailer)."""
    n = table.num_rows
    parts = [_fixed_width(np.full(n, table.num_columns, dtype=">i2"), 2)]
    for column, kind in zip(table.columns, kinds, strict=True):
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        parts += _binary_fields(arr, kind)
    rows = pc.binary_join_element_wise(*parts, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n + 1, offset=rows.offset * 4)
    return rows.buffers()[2][int(offsets[0]) : int(offsets[-1])]


class _DailyTotals:
    """Daily sales of a direct order load, summed chunk by chunk while the lines stream.

    The same definitions as the SQL in _Store._derive_daily_sales (the module docstring), with
    SQL's NULLs: a sum over no contributing line is NULL (revenue, average price) or 0 (units,
    returned units). Lines of every status make a day exist, so an all-cancelled day has 0 units.
    """

    COLUMNS = ("units", "revenue", "avg_price", "returned_units")
    # per (sku, day): units, revenue, lines with revenue, priced demand value, its units, lines
    # of priced demand, returned units
    _SUMS = 7
    _DAY_BIAS = 1 << 31  # days since 1970 as an unsigned 32-bit number, in a key's low half

    def __init__(self) -> None:
        self.skus: dict[str, int] = {}
        self.keys: list[np.ndarray] = []
        self.sums: list[np.ndarray] = []
        self.valid = True

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        encoded = pc.dictionary_encode(
            _flat(pa.array(frame["sku"], type=pa.string(), from_pandas=True))
        )
        codes = np.array(
            [self.skus.setdefault(s, len(self.skus)) for s in encoded.dictionary.to_pylist()],
            dtype=np.int64,
        )[encoded.indices.to_numpy(zero_copy_only=False)]
        days = frame["sale_date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
        uniq, where = np.unique((codes << 32) | (days + self._DAY_BIAS), return_inverse=True)
        q = frame["quantity"].to_numpy(dtype=np.float64, na_value=np.nan)
        price = frame["unit_price"].to_numpy(dtype=np.float64, na_value=np.nan)
        discount = frame["discount"].to_numpy(dtype=np.float64, na_value=np.nan)
        status = frame["status"]
        completed = (status == "completed").to_numpy(dtype=bool)
        returned = (status == "returned").to_numpy(dtype=bool)
        demand = (q > 0) & (completed | returned)
        value = q * price * (1 - discount)
        priced = ~np.isnan(value)
        sold = (q > 0) & completed & priced
        paid = demand & priced
        weights = (
            np.where(demand, q, 0.0),
            np.where(sold, value, 0.0),
            sold.astype(np.float64),
            np.where(paid, value, 0.0),
            np.where(paid, q, 0.0),
            paid.astype(np.float64),
            np.where(returned, np.abs(q), 0.0),
        )
        self.keys.append(uniq)
        self.sums.append(np.stack([np.bincount(where, w, len(uniq)) for w in weights], axis=1))

    def result(self) -> pa.Table:
        """One row per (sku, day), in SQL's terms (NULL where SQL's SUM finds nothing)."""
        keys = np.concatenate(self.keys) if self.keys else np.empty(0, dtype=np.int64)
        parts = np.concatenate(self.sums) if self.sums else np.empty((0, self._SUMS))
        self.keys, self.sums = [], []
        uniq, where = np.unique(keys, return_inverse=True)
        sums = [np.bincount(where, parts[:, i], len(uniq)) for i in range(self._SUMS)]
        units, revenue, revenue_n, paid, paid_units, paid_n, returned_units = sums
        has_price = (paid_n > 0) & (paid_units != 0)
        avg_price = np.where(has_price, paid / np.where(has_price, paid_units, 1.0), np.nan)
        names = np.array(list(self.skus), dtype=object)
        days = (uniq & 0xFFFFFFFF) - self._DAY_BIAS
        return pa.table(
            {
                "sku": pa.array(names[uniq >> 32] if len(uniq) else [], type=pa.string()),
                "sale_date": pa.array(days.astype(np.int32), type=pa.int32()).cast(pa.date32()),
                "units": pa.array(units),
                "revenue": pa.array(np.where(revenue_n > 0, revenue, np.nan), from_pandas=True),
                "avg_price": pa.array(avg_price, from_pandas=True),
                "returned_units": pa.array(returned_units),
            }
        )


class _Store:
    """The SQL of one ingestion, on the connection that holds its transaction."""

    def __init__(self, conn: Connection, ent: Entity, plan: ColumnPlan, extras: list[str]) -> None:
        self.conn = conn
        self.ent = ent
        self.pg = conn.dialect.name == "postgresql"
        self.cache_size: Any = None
        self.staged = 0
        self.table = Base.metadata.tables[ent.table]
        self.columns: list[tuple[str, str]] = [(c.name, c.kind) for c in ent.columns]
        self.columns += list(_STAGE_EXTRA.get(ent.name, ()))
        self.stage = f"_stage_{ent.name}"
        self._copy: contextlib.ExitStack | None = None
        self._copy_stream: Any = None
        # PostgreSQL order lines into an empty table go straight into it (see _begin).
        self.direct = False
        self._daily = _DailyTotals()
        present = set(plan.present) | ({"attributes"} if extras else set())
        defaults = set(DEFAULTS.get(ent.name, {}))
        key = list(ent.key)
        computed = [name for name, _ in _STAGE_EXTRA.get(ent.name, ())]
        self.insert_cols = [c for c, _ in self.columns if c in key or c in present or c in defaults]
        self.insert_cols += [c for c in computed if c not in self.insert_cols]
        self.update_cols = [
            c for c in self.insert_cols if c not in key and (c in present or c in computed)
        ]
        self._begin()

    def q(self, name: str) -> str:
        return str(self.conn.dialect.identifier_preparer.quote(name))

    def _begin(self) -> None:
        cols = ", ".join(
            f"{self.q(name)} {self.table.c[name].type.compile(dialect=self.conn.dialect)}"
            for name, _ in self.columns
        )
        if self.pg:
            # Hash joins and aggregates over a whole file stay in memory instead of spilling.
            self.conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
            # Compiling these one-off bulk statements costs more than it saves.
            self.conn.exec_driver_sql("SET LOCAL jit = off")
            self.conn.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
            # Index builds sort in memory.
            self.conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
            if self.ent.name == "orders" and not self._has_rows():
                # The first order file (a history load) needs no upsert: its lines are copied
                # into order_lines itself, with the table's indexes dropped and built once at
                # the end, instead of into a stage and then once more into the table. The lock
                # keeps a concurrent load from adding rows meanwhile; it is held until commit.
                self.conn.exec_driver_sql(f"LOCK TABLE {self.table.name} IN ACCESS EXCLUSIVE MODE")
                self.direct = not self._has_rows()
            if self.direct:
                self._drop_indexes()
            else:
                self.conn.exec_driver_sql(
                    f"CREATE TEMPORARY TABLE {self.stage} (_row BIGINT, {cols}) ON COMMIT DROP"
                )
        else:
            # A page cache of 128 MiB for this load: with SQLite's 2 MiB default the inserts into
            # the target's indexes spend their time re-reading pages.
            self.cache_size = self.conn.exec_driver_sql("PRAGMA cache_size").scalar()
            self.conn.exec_driver_sql("PRAGMA cache_size = -131072")
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{self.stage}")
            self.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {self.stage} (_row INTEGER, {cols})")

    def _has_rows(self) -> bool:
        return bool(
            self.conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {self.table.name})").scalar()
        )

    def _drop_indexes(self, table: Table | None = None) -> None:
        """Drop a table's indexes and primary key (ACCESS EXCLUSIVE until commit; PostgreSQL)."""
        table = self.table if table is None else table
        dialect = self.conn.dialect
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            self.conn.exec_driver_sql(str(DropIndex(index).compile(dialect=dialect)))
        self.conn.exec_driver_sql(str(DropConstraint(table.primary_key).compile(dialect=dialect)))

    def _build_indexes(self, table: Table | None = None) -> None:
        table = self.table if table is None else table
        dialect = self.conn.dialect
        self.conn.exec_driver_sql(str(AddConstraint(table.primary_key).compile(dialect=dialect)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            self.conn.exec_driver_sql(str(CreateIndex(index).compile(dialect=dialect)))

    def __enter__(self) -> _Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._copy is not None:  # a failure mid-file: end the COPY so the rollback can run
            copy, self._copy = self._copy, None
            copy.__exit__(*exc)
        # PostgreSQL drops its temporary tables and SET LOCAL values with the transaction; a
        # pooled SQLite connection would keep both.
        if self.pg:
            return
        for table in (self.stage, "_affected_days", "_matched_lines"):
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")
        self.conn.exec_driver_sql(f"PRAGMA cache_size = {int(self.cache_size or -2000)}")

    def known_skus(self) -> pd.Index | None:
        if "sku" not in {c.name for c in self.ent.columns} or self.ent.name == "products":
            return None
        skus = self.conn.exec_driver_sql("SELECT sku FROM products").scalars().all()
        return pd.Index(skus, dtype="str")

    def _arrow(self, frame: pd.DataFrame) -> pa.Table:
        arrays: list[pa.Array] = [pa.array(frame["_row"].to_numpy(dtype=np.int64))]
        for name, kind in self.columns:
            col = frame[name]
            if kind == "json":
                texts = [None if v is None else json.dumps(v) for v in col.tolist()]
                arrays.append(pa.array(texts, type=pa.string()))
            elif kind in ("bool", "str"):
                arrays.append(_flat(pa.array(col, type=_ARROW_TYPES[kind], from_pandas=True)))
            elif kind == "date":
                arrays.append(pa.array(col.to_numpy(dtype="datetime64[s]")).cast(pa.date32()))
            elif kind == "datetime":
                arrays.append(pa.Array.from_pandas(col).cast(_ARROW_TYPES[kind]))
            else:
                values = col.to_numpy(dtype=np.float64, na_value=np.nan)
                arr = pa.array(values, from_pandas=True)
                arrays.append(arr.cast(pa.int64()) if kind == "int" else arr)
        return pa.Table.from_arrays(arrays, names=["_row", *(n for n, _ in self.columns)])

    def write(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        self.staged += len(frame)
        table = self._arrow(frame)
        names = ", ".join(self.q(n) for n in table.column_names)
        if self.pg:
            if self.direct:
                self._daily.add(frame)
                table = table.select(self.insert_cols)
            self._copy_chunk(table)
            return
        lists = []
        kinds = ["int", *(kind for _, kind in self.columns)]
        for kind, col in zip(kinds, table.columns, strict=True):
            if kind == "date":
                col = col.cast(pa.string())
            elif kind == "datetime":
                # SQLAlchemy's SQLite DateTime text format, in UTC.
                col = pc.strftime(col, format="%Y-%m-%d %H:%M:%S")
            lists.append(col.to_pylist())
        marks = ", ".join("?" for _ in lists)
        cursor = self.conn.connection.cursor()
        try:
            # An iterator: sqlite3 takes one, and the chunk's tuples never exist all at once.
            rows = cast(Any, zip(*lists, strict=True))
            cursor.executemany(f"INSERT INTO {self.stage} ({names}) VALUES ({marks})", rows)
        finally:
            cursor.close()

    def _copy_chunk(self, table: pa.Table) -> None:
        """Stream a chunk into the stage through the file's one COPY, opened by the first chunk.

        The rows go in PostgreSQL's binary COPY format, built column by column by pyarrow and
        numpy (the server then parses no text: half the time of CSV for this table). A queued
        writer hands the bytes to a thread that sends them (socket I/O releases the GIL), so
        this thread goes on parsing and validating the next chunk while the server takes this
        one: the two sides of the load run on two cores instead of taking turns.
        """
        types = [
            _binary_type(self.table.c[n].type) if n != "_row" else "int8"
            for n in table.column_names
        ]
        data = _binary_rows(table, types)
        if self._copy_stream is None:
            names = ", ".join(self.q(n) for n in table.column_names)
            target = self.table.name if self.direct else self.stage
            raw = self.conn.connection.driver_connection
            assert raw is not None
            stack = contextlib.ExitStack()
            cur = stack.enter_context(raw.cursor())
            self._copy_stream = stack.enter_context(
                cur.copy(
                    f"COPY {target} ({names}) FROM STDIN (FORMAT binary)",
                    writer=QueuedLibpqWriter(cur),
                )
            )
            self._copy = stack
            self._copy_stream.write(_COPY_SIGNATURE)
        # A memoryview: the writer slices it into the queue without copying the bytes.
        self._copy_stream.write(memoryview(data))

    def finish_staging(self) -> None:
        """End the file's COPY (waiting for the server to take every row) before querying."""
        if self._copy is not None:
            self._copy_stream.write(_COPY_TRAILER)
            copy, self._copy = self._copy, None
            self._copy_stream = None
            copy.close()

    def drop(self, duplicates: pd.DataFrame) -> None:
        """Take the rows of duplicated keys back out of what the file staged."""
        if duplicates.empty:
            return
        if self.direct:
            self._drop_keys(duplicates[list(self.ent.key)].drop_duplicates())
            self._daily.valid = False  # they counted lines that are gone again
            return
        rows = duplicates["_row"].to_numpy(dtype=np.int64)
        for lo in range(0, len(rows), _IN_BATCH):
            batch = ", ".join(str(int(r)) for r in rows[lo : lo + _IN_BATCH])
            self.conn.exec_driver_sql(f"DELETE FROM {self.stage} WHERE _row IN ({batch})")

    def _drop_keys(self, keys: pd.DataFrame) -> None:
        """Delete a direct load's lines with these keys (the table held no others)."""
        if keys.empty:
            return
        names = list(keys.columns)
        types = ", ".join(
            f"{self.q(n)} {self.table.c[n].type.compile(dialect=self.conn.dialect)}" for n in names
        )
        self.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE _dup_keys ({types}) ON COMMIT DROP")
        self.conn.exec_driver_sql(
            f"INSERT INTO _dup_keys VALUES ({', '.join('%s' for _ in names)})",
            [
                tuple(v.item() if isinstance(v, np.generic) else v for v in row)
                for row in keys.itertuples(index=False)
            ],
        )
        match = " AND ".join(f"t.{self.q(n)} = d.{self.q(n)}" for n in names)
        self.conn.exec_driver_sql(
            f"DELETE FROM {self.table.name} t USING _dup_keys d WHERE {match}"
        )

    def _differs(self, column: str) -> str:
        old, new = f"t.{self.q(column)}", f"excluded.{self.q(column)}"
        if not self.pg:
            return f"{old} IS NOT {new}"
        if column == "attributes":  # json has no equality operator
            return f"{old}::text IS DISTINCT FROM {new}::text"
        return f"{old} IS DISTINCT FROM {new}"

    def merge(self) -> None:
        """Upsert the staged rows into the target, then what depends on them."""
        if self.direct:
            self._finish_direct()
            return
        if self.pg:
            self.conn.exec_driver_sql(f"ANALYZE {self.stage}")
        if self.ent.name == "orders":
            self._collect_affected_days()
        cols = list(self.insert_cols)
        exprs = [self.q(c) for c in cols]
        updates = list(self.update_cols)
        if self.ent.name == "sales":
            cols.append("source")
            exprs.append("'direct'")
            updates.append("source")
        sets = [f"{self.q(c)} = excluded.{self.q(c)}" for c in updates]
        changed = " OR ".join(self._differs(c) for c in updates)
        if self.ent.name == "products" and sets:
            sets.append("updated_at = CURRENT_TIMESTAMP")
        action = f"DO UPDATE SET {', '.join(sets)} WHERE {changed}" if sets else "DO NOTHING"
        # Insert in an order that keeps each index's hot pages few: by day, order lines touch
        # one spot per SKU in the sku indexes and one time-ordered run of order ids.
        order = (
            ["sale_date", "sku", "order_id", "line"]
            if self.ent.name == "orders"
            else list(self.ent.key)
        )
        if self.pg and self.ent.name == "orders" and self._rebuild_indexes():
            self._bulk_insert(cols, exprs, updates)
        else:
            self.conn.exec_driver_sql(
                f"INSERT INTO {self.table.name} AS t ({', '.join(self.q(c) for c in cols)}) "
                f"SELECT {', '.join(exprs)} FROM {self.stage} WHERE true "
                f"ORDER BY {', '.join(self.q(c) for c in order)} "
                f"ON CONFLICT ({', '.join(self.q(k) for k in self.ent.key)}) {action}"
            )
        if self.pg and self.ent.name in _SALE_ENTITIES and self.staged >= _ANALYZE_ROWS:
            # A big load changes the table's shape: plan what follows with fresh statistics.
            self.conn.exec_driver_sql(f"ANALYZE {self.table.name}")
        if self.ent.name == "orders":
            self._derive_daily_sales()
            self._refresh_sale_dates("_affected_days")
        elif self.ent.name == "sales":
            self._refresh_sale_dates(self.stage)

    def _finish_direct(self) -> None:
        """Daily sales from the copied lines (all of the table's), then the indexes."""
        self._derive_daily_sales(fresh=True)
        self._build_indexes()
        if self.staged >= _ANALYZE_ROWS:
            self.conn.exec_driver_sql(f"ANALYZE {self.table.name}")
        self._refresh_sale_dates("_affected_days")

    def _rebuild_indexes(self, table: str | None = None, rows: int | None = None) -> bool:
        """True when ``rows`` (default: the file's) are at least ``_REBUILD_SHARE`` of the rows
        already in ``table`` (default: the entity's)."""
        name = table or self.table.name
        rows = self.staged if rows is None else rows
        if rows < _REBUILD_MIN_ROWS:
            return False
        estimate = self.conn.exec_driver_sql(
            f"SELECT reltuples FROM pg_class WHERE oid = '{name}'::regclass"
        ).scalar()
        if estimate is None or estimate < 0:  # never analysed: count, but no further than needed
            limit = int(rows / _REBUILD_SHARE) + 1
            estimate = self.conn.exec_driver_sql(
                f"SELECT count(*) FROM (SELECT 1 FROM {name} LIMIT {limit}) x"
            ).scalar()
        return rows >= _REBUILD_SHARE * float(estimate or 0)

    def _bulk_insert(self, cols: list[str], exprs: list[str], updates: list[str]) -> None:
        """Update changed rows, drop the indexes, append the new rows, build the indexes again.

        Building an index by one sort costs a fraction of inserting every row into it (the
        PostgreSQL manual's advice for populating a table). The DDL takes an ACCESS EXCLUSIVE
        lock on the table until commit, and rolls back with the transaction.
        """
        table, key = self.table, list(self.ent.key)
        match = " AND ".join(f"t.{self.q(k)} = s.{self.q(k)}" for k in key)
        # Order lines: the stored ones among the file's are in _matched_lines already.
        stored = "_matched_lines" if self.ent.name == "orders" else table.name
        known = " AND ".join(f"m.{self.q(k)} = s.{self.q(k)}" for k in key)
        if updates:
            sets = ", ".join(f"{self.q(c)} = s.{self.q(c)}" for c in updates)
            changed = " OR ".join(f"t.{self.q(c)} IS DISTINCT FROM s.{self.q(c)}" for c in updates)
            source = f"{self.stage} s"
            if stored != table.name:  # only the file's stored lines can change
                source = f"(SELECT s.* FROM {self.stage} s JOIN {stored} m ON {known}) s"
            self.conn.exec_driver_sql(
                f"UPDATE {table.name} AS t SET {sets} FROM {source} WHERE {match} AND ({changed})"
            )
        self._drop_indexes()
        self.conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(self.q(c) for c in cols)}) "
            f"SELECT {', '.join(f's.{e}' for e in exprs)} FROM {self.stage} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {stored} m WHERE {known})"
        )
        self._build_indexes()

    def _collect_affected_days(self) -> None:
        """The (sku, day) pairs the file touches, and the old days of lines it moves.

        The file's lines that are already stored are found by one join (``_matched_lines``: key,
        old sku and day); the update and the append of new lines then work from that small
        table instead of joining the file with every stored line again.
        """
        if self.pg:
            create = "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS"
        else:
            for table in ("_affected_days", "_matched_lines"):
                self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")
            create = "CREATE TEMPORARY TABLE {} AS"
        self.conn.exec_driver_sql(
            f"{create.format('_matched_lines')} SELECT s.order_id, s.line, o.sku AS old_sku, "
            "o.sale_date AS old_date, (o.sku <> s.sku OR o.sale_date <> s.sale_date) AS moved "
            f"FROM {self.stage} s JOIN order_lines o ON o.order_id = s.order_id AND o.line = s.line"
        )
        self.conn.exec_driver_sql(
            f"{create.format('_affected_days')} SELECT DISTINCT sku, sale_date FROM {self.stage}"
        )
        self.conn.exec_driver_sql(
            "INSERT INTO _affected_days SELECT DISTINCT m.old_sku, m.old_date "
            "FROM _matched_lines m "
            "WHERE m.moved AND NOT EXISTS (SELECT 1 FROM _affected_days a "
            "WHERE a.sku = m.old_sku AND a.sale_date = m.old_date)"
        )
        if self.pg:
            self.conn.exec_driver_sql("ANALYZE _matched_lines")
            self.conn.exec_driver_sql("ANALYZE _affected_days")

    def _derive_daily_sales(self, *, fresh: bool = False) -> None:
        """Daily sales of the touched days, from all their lines; ``fresh``: every line in
        order_lines is this file's (a direct load), so aggregate them all into _affected_days."""
        demand = "o.quantity > 0 AND o.status IN ('completed', 'returned')"
        value = "o.quantity * o.unit_price * (1 - o.discount)"
        sums = {
            "units": f"SUM(CASE WHEN {demand} THEN o.quantity END)",
            "revenue": f"SUM(CASE WHEN o.quantity > 0 AND o.status = 'completed' THEN {value} END)",
            "avg_price": f"SUM(CASE WHEN {demand} THEN {value} END) / NULLIF(SUM(CASE WHEN "
            f"{demand} AND o.unit_price IS NOT NULL THEN o.quantity END), 0)",
            "returned_units": "SUM(CASE WHEN o.status = 'returned' THEN ABS(o.quantity) END)",
        }
        aggregated = ", ".join(f"{expr} AS {name}" for name, expr in sums.items())
        if fresh:
            if self._daily.valid:
                days = self._copy_daily_totals()
            else:
                # One pass over the lines, no index needed: the days touched are those found.
                days = self.conn.exec_driver_sql(
                    "CREATE TEMPORARY TABLE _affected_days ON COMMIT DROP AS "
                    f"SELECT o.sku, o.sale_date, {aggregated} FROM order_lines o "
                    "GROUP BY o.sku, o.sale_date"
                ).rowcount
            if self._rebuild_indexes("daily_sales", days):
                self._bulk_daily_sales(sums)
                return
            lines = ""
            values = {name: f"a.{name}" for name in sums}
            group = ""
        elif self.pg:
            # Aggregate the touched days' lines first: PostgreSQL then hashes the days and
            # scans the lines once, instead of one index range scan per day.
            lines = (
                f"LEFT JOIN (SELECT o.sku, o.sale_date, {aggregated} FROM order_lines o "
                "WHERE EXISTS (SELECT 1 FROM _affected_days x "
                "WHERE x.sku = o.sku AND x.sale_date = o.sale_date)"
                " GROUP BY o.sku, o.sale_date) g ON g.sku = a.sku AND g.sale_date = a.sale_date"
            )
            values = {name: f"g.{name}" for name in sums}
            group = ""
        else:
            # SQLite looks each touched day up in ix_order_lines_sale_date_sku.
            lines = "LEFT JOIN order_lines o ON o.sku = a.sku AND o.sale_date = a.sale_date"
            values = sums
            group = "GROUP BY a.sku, a.sale_date "
        columns = (
            f"COALESCE({values['units']}, 0), {values['revenue']}, {values['avg_price']}, "
            f"COALESCE({values['returned_units']}, 0)"
        )
        fields = ("units", "revenue", "avg_price", "returned_units", "source")
        sets = ", ".join(f"{f} = excluded.{f}" for f in fields)
        changed = " OR ".join(self._differs(f) for f in fields)
        self.conn.exec_driver_sql(
            "INSERT INTO daily_sales AS t "
            "(sku, date, units, revenue, avg_price, returned_units, on_promotion, source) "
            f"SELECT a.sku, a.sale_date, {columns}, false, 'orders' "
            f"FROM _affected_days a {lines} "
            f"WHERE true {group}ORDER BY a.sku, a.sale_date "
            f"ON CONFLICT (sku, date) DO UPDATE SET {sets} WHERE {changed}"
        )

    def _copy_daily_totals(self) -> int:
        """The client's per-day totals of a direct load into _affected_days; their count."""
        totals = self._daily.result()
        daily = Base.metadata.tables["daily_sales"]
        types = {
            "sku": self.table.c["sku"].type,
            "sale_date": self.table.c["sale_date"].type,
            **{n: daily.c[n].type for n in _DailyTotals.COLUMNS},
        }
        cols = ", ".join(
            f"{self.q(n)} {t.compile(dialect=self.conn.dialect)}" for n, t in types.items()
        )
        self.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE _affected_days ({cols}) ON COMMIT DROP")
        if totals.num_rows:
            raw = self.conn.connection.driver_connection
            assert raw is not None
            names = ", ".join(self.q(n) for n in types)
            data = _binary_rows(totals, [_binary_type(t) for t in types.values()])
            with (
                raw.cursor() as cur,
                cur.copy(f"COPY _affected_days ({names}) FROM STDIN (FORMAT binary)") as copy,
            ):
                copy.write(_COPY_SIGNATURE)
                copy.write(memoryview(data))
                copy.write(_COPY_TRAILER)
        return int(totals.num_rows)

    def _bulk_daily_sales(self, sums: Mapping[str, str]) -> None:
        """_affected_days' aggregates into daily_sales with its indexes built again after:
        update the days it has, append the others (no per-row conflict check), index once."""
        names = list(sums)
        values = [
            "COALESCE(a.units, 0)",
            "a.revenue",
            "a.avg_price",
            "COALESCE(a.returned_units, 0)",
        ]
        match = "t.sku = a.sku AND t.date = a.sale_date"
        sets = ", ".join(f"{n} = {v}" for n, v in zip(names, values, strict=True))
        changed = " OR ".join(
            f"t.{n} IS DISTINCT FROM {v}" for n, v in zip(names, values, strict=True)
        )
        self.conn.exec_driver_sql(
            f"UPDATE daily_sales t SET {sets}, source = 'orders' FROM _affected_days a "
            f"WHERE {match} AND ({changed} OR t.source IS DISTINCT FROM 'orders')"
        )
        daily = Base.metadata.tables["daily_sales"]
        self._drop_indexes(daily)
        self.conn.exec_driver_sql(
            f"INSERT INTO daily_sales (sku, date, {', '.join(names)}, on_promotion, source) "
            f"SELECT a.sku, a.sale_date, {', '.join(values)}, false, 'orders' "
            f"FROM _affected_days a WHERE NOT EXISTS (SELECT 1 FROM daily_sales t WHERE {match})"
        )
        self._build_indexes(daily)

    def _refresh_sale_dates(self, touched: str) -> None:
        # One aggregate over the touched SKUs' rows: a correlated MIN/MAX per product made
        # PostgreSQL scan daily_sales once per SKU while the fresh rows had no statistics.
        distinct = "IS DISTINCT FROM" if self.pg else "IS NOT"
        self.conn.exec_driver_sql(
            "UPDATE products SET first_sale_date = s.first_day, last_sale_date = s.last_day "
            "FROM (SELECT t.sku, MIN(d.date) AS first_day, MAX(d.date) AS last_day "
            f"FROM (SELECT DISTINCT sku FROM {touched}) t "
            "LEFT JOIN daily_sales d ON d.sku = t.sku AND d.units > 0 GROUP BY t.sku) s "
            "WHERE products.sku = s.sku AND (products.first_sale_date "
            f"{distinct} s.first_day OR products.last_sale_date {distinct} s.last_day)"
        )

    def log(self, report: IngestReport, started_at: datetime) -> None:
        self.conn.execute(insert(IngestionLog).values(**_log_values(report, started_at)))


def _log_values(report: IngestReport, started_at: datetime) -> dict[str, Any]:
    detail: dict[str, Any] = {"reasons": report.reasons}
    if report.reject_path is not None:
        detail["reject_path"] = str(report.reject_path)
    if report.ignored_columns:
        detail["ignored_columns"] = report.ignored_columns
    if report.detail:
        detail["message"] = report.detail
    return {
        "file_name": report.source,
        "entity": report.entity,
        "checksum": report.checksum,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
        "rows_read": report.rows_read,
        "rows_accepted": report.rows_accepted,
        "rows_rejected": report.rows_rejected,
        "status": report.status,
        "detail": json.dumps(detail),
    }


def _previous_load_in(conn: Connection, entity: str, checksum: str) -> IngestionLog | None:
    row = conn.execute(
        select(IngestionLog)
        .where(
            IngestionLog.entity == entity,
            IngestionLog.checksum == checksum,
            IngestionLog.status == "loaded",
        )
        .order_by(IngestionLog.id.desc())
        .limit(1)
    ).first()
    return None if row is None else IngestionLog(**dict(row._mapping))


def _previous_load(engine: Engine, entity: str, checksum: str) -> IngestionLog | None:
    with engine.connect() as conn:
        return _previous_load_in(conn, entity, checksum)


def _unchanged_report(
    entity: str, source: str, checksum: str, previous: IngestionLog | None, started: float
) -> IngestReport:
    when = previous.finished_at or previous.started_at if previous is not None else None
    return IngestReport(
        entity,
        source,
        checksum,
        previous.rows_read if previous is not None else 0,
        previous.rows_accepted if previous is not None else 0,
        previous.rows_rejected if previous is not None else 0,
        "unchanged",
        None,
        {},
        time.perf_counter() - started,
        detail=f"already loaded{f' at {when:%Y-%m-%d %H:%M:%S}' if when else ''}; nothing changed",
    )


def _log_outside(engine: Engine, report: IngestReport, started_at: datetime) -> None:
    """Record an attempt that loaded nothing, in a transaction of its own."""
    with engine.begin() as conn:
        conn.execute(insert(IngestionLog).values(**_log_values(report, started_at)))


def _fail(
    engine: Engine,
    entity: str,
    source: str,
    checksum: str,
    started: float,
    started_at: datetime,
    message: str,
) -> None:
    report = IngestReport(
        entity,
        source,
        checksum,
        0,
        0,
        0,
        "failed",
        None,
        {},
        time.perf_counter() - started,
        detail=message,
    )
    with contextlib.suppress(Exception):  # the original error is the one worth raising
        _log_outside(engine, report, started_at)


def _entity(name: str) -> Entity:
    try:
        return ENTITIES[name]
    except KeyError:
        raise IngestError(f"unknown entity {name!r}; choose one of {', '.join(ENTITIES)}") from None


# ---------------------------------------------------------------------------------------------
# rejects


class _RejectSink:
    """Rejects spilled to disk as they come, merged in row order into one CSV at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.late: list[pd.DataFrame] = []
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self._fh: io.TextIOWrapper | None = None

    def _note(self, rejects: pd.DataFrame) -> None:
        self.count += len(rejects)
        labels = rejects["reason"] + " (" + rejects["column"] + ")"
        self.reasons.update({str(k): int(n) for k, n in labels.value_counts().items()})

    def add(self, rejects: pd.DataFrame) -> None:
        if rejects.empty:
            return
        self._note(rejects)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.partial, "w", newline="", encoding="utf-8")  # noqa: SIM115
            csv.writer(self._fh).writerow(REJECT_COLUMNS)
        rejects[list(REJECT_COLUMNS)].to_csv(self._fh, header=False, index=False)

    def add_late(self, rejects: pd.DataFrame) -> None:
        """Rejects found after the whole file was read (duplicate keys), sorted by row."""
        if rejects.empty:
            return
        self._note(rejects)
        self.late.append(rejects)

    def finish(self, *, stale: bool) -> Path | None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.count == 0:
            if stale and self.path.exists():
                self.path.unlink()  # an old reject file would describe a different load
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        late = pd.concat(self.late, ignore_index=True) if self.late else empty_rejects()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(REJECT_COLUMNS)
            early: Iterator[list[str]] = iter(())
            fh = None
            if self.partial.exists():
                fh = open(self.partial, newline="", encoding="utf-8")  # noqa: SIM115
                early = csv.reader(fh)
                next(early, None)
            try:
                late_rows: list[list[str]] = late[list(REJECT_COLUMNS)].astype(str).values.tolist()
                writer.writerows(heapq.merge(early, late_rows, key=_row_number))
            finally:
                if fh is not None:
                    fh.close()
        os.replace(tmp, self.path)
        self.partial.unlink(missing_ok=True)
        return self.path

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.partial.unlink(missing_ok=True)


def _row_number(record: Any) -> int:
    return int(record[0])


def _default_reject_path(path: Path) -> Path:
    name = path.name + ".rejects.csv"
    if os.access(path.parent, os.W_OK):
        return path.with_name(name)
    return _data_reject_path(path.name)


def _data_reject_path(label: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "ingest"
    return get_settings().data_dir / "rejects" / f"{safe}.rejects.csv"


# ---------------------------------------------------------------------------------------------
# reading files


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == _PARQUET_MAGIC


def _open_file(
    path: Path, ent: Entity, mapping: Mapping[str, str] | None, chunk_rows: int
) -> tuple[ColumnPlan, Iterator[_Chunk]]:
    if _is_parquet(path):
        parquet = pq.ParquetFile(path)
        plan = resolve_columns(ent, list(parquet.schema_arrow.names), mapping)
        return plan, _parquet_chunks(parquet, plan, ent, chunk_rows)
    names, delimiter, body_at, sample = _csv_header(path)
    plan = resolve_columns(ent, names, mapping)
    block = _block_bytes(sample, chunk_rows)
    return plan, _csv_chunks(path, names, delimiter, body_at, block, plan, ent)


def _wanted(plan: ColumnPlan, ent: Entity) -> list[str]:
    wanted = list(dict.fromkeys(plan.sources.values()))
    if ent.name == "products":
        wanted += [c for c in plan.extras if c not in wanted]
    return wanted


def _planned(raw: pd.DataFrame, plan: ColumnPlan, ent: Entity) -> pd.DataFrame:
    """Source columns renamed to the entity's (a source may feed several entity columns)."""
    absent = sorted({s for s in plan.sources.values() if s not in raw.columns})
    if absent:
        raise PlanError(f"column(s) {', '.join(absent)} missing from part of the source")
    data = {target: raw[source].reset_index(drop=True) for target, source in plan.sources.items()}
    if ent.name == "products":
        for extra in plan.extras:
            data[extra] = raw[extra].reset_index(drop=True)
    return pd.DataFrame(data, index=pd.RangeIndex(len(raw)))


def _parquet_chunks(
    parquet: pq.ParquetFile, plan: ColumnPlan, ent: Entity, chunk_rows: int
) -> Iterator[_Chunk]:
    start = 0
    batches = parquet.iter_batches(batch_size=chunk_rows, columns=_wanted(plan, ent))
    for batch in _prefetched(batches):
        rows = np.arange(start + 1, start + batch.num_rows + 1, dtype=np.int64)
        start += batch.num_rows
        arrays, bad = _decode_columns(batch.columns, batch.schema.names)
        table = pa.Table.from_arrays(arrays, names=batch.schema.names)
        yield _split_undecodable(table, rows, bad, plan, ent)


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` produced by a thread, at most ``depth`` ahead: pyarrow decodes the next
    batch (without the GIL) while this thread validates the current one."""
    ahead: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Raised(exc))

    worker = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = ahead.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        worker.join()


def _csv_header(path: Path) -> tuple[list[str], str, int, bytes]:
    """Column names, delimiter, the byte offset where data starts and a sample of the data."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        while True:
            cut = _last_boundary(head, first=True)
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


def _block_bytes(sample: bytes, chunk_rows: int) -> int:
    lines = max(sample.count(b"\n"), 1)
    per_row = max(len(sample) / lines, 8.0)
    return int(min(max(chunk_rows * per_row, _MIN_BLOCK), _MAX_BLOCK))


def _last_boundary(data: bytes, *, first: bool = False) -> int:
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


def _record_blocks(path: Path, offset: int, block: int) -> Iterator[bytes]:
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
            cut = _last_boundary(buf)
            if cut < 0:
                carry = buf
                continue
            yield buf[: cut + 1]
            carry = buf[cut + 1 :]


def _csv_chunks(
    path: Path,
    names: list[str],
    delimiter: str,
    offset: int,
    block: int,
    plan: ColumnPlan,
    ent: Entity,
) -> Iterator[_Chunk]:
    wanted = _wanted(plan, ent)
    start = 0
    for data in _record_blocks(path, offset, block):
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
                include_columns=wanted,
                column_types={n: pa.string() for n in wanted},
                check_utf8=False,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if invalid:
            chunk = _csv_fallback(data, names, delimiter, wanted, start, plan, ent)
        else:
            rows = np.arange(start + 1, start + table.num_rows + 1, dtype=np.int64)
            arrays, bad = _decode_columns(table.columns, table.column_names)
            chunk = _split_undecodable(
                pa.Table.from_arrays(arrays, names=wanted), rows, bad, plan, ent
            )
        start += chunk.size
        yield chunk


Undecodable = dict[str, tuple[np.ndarray, list[str]]]  # column -> (mask, shown bad values)


def _decode_columns(
    columns: Iterable[pa.Array | pa.ChunkedArray], names: list[str]
) -> tuple[list[pa.Array], Undecodable]:
    """Columns with invalid UTF-8 cells nulled, and per column where those cells were."""
    arrays: list[pa.Array] = []
    bad: Undecodable = {}
    for name, column in zip(names, columns, strict=True):
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        binary = pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)
        textual = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
        if textual:
            try:
                arr.validate(full=True)
                arrays.append(arr)
                continue
            except pa.ArrowInvalid:
                pass
        if not (binary or textual):
            arrays.append(arr)
            continue
        raw = arr.view(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
        cells: list[str | None] = []
        mask = np.zeros(len(raw), dtype=bool)
        shown: list[str] = []
        for i, cell in enumerate(raw.to_pylist()):
            if cell is None:
                cells.append(None)
                continue
            try:
                cells.append(cell.decode("utf-8"))
            except UnicodeDecodeError:
                cells.append(None)
                mask[i] = True
                shown.append(cell.decode("utf-8", errors="backslashreplace"))
        arrays.append(pa.array(cells, type=pa.string()))
        if mask.any():
            bad[name] = (mask, shown)
    return arrays, bad


def _split_undecodable(
    table: pa.Table, rows: Rows, bad: Undecodable, plan: ColumnPlan, ent: Entity
) -> _Chunk:
    raw = table.to_pandas(date_as_object=False)
    refused = np.zeros(len(raw), dtype=bool)
    parts = []
    for name, (mask, shown) in bad.items():
        hit = mask & ~refused
        values = np.asarray(shown, dtype=object)[hit[mask]]
        refused |= hit
        column = next((t for t, s in plan.sources.items() if s == name), name)
        parts.append(make_rejects(rows[hit], UNDECODABLE, column, values))
    rejects = empty_rejects()
    if parts:
        rejects = pd.concat(parts, ignore_index=True).sort_values("row", kind="stable")
    keep = ~refused
    return _Chunk(_planned(raw.loc[keep], plan, ent), rows[keep], rejects)


def _csv_fallback(
    data: bytes,
    names: list[str],
    delimiter: str,
    wanted: list[str],
    start: int,
    plan: ColumnPlan,
    ent: Entity,
) -> _Chunk:
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
        for name in wanted:
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
        pd.DataFrame(kept, columns=wanted, dtype="str")
        if kept
        else pd.DataFrame({n: pd.Series(dtype="str") for n in wanted})
    )
    merged = pd.concat(rejects, ignore_index=True) if rejects else empty_rejects()
    return _Chunk(_planned(raw, plan, ent), np.asarray(kept_rows, dtype=np.int64), merged)


def _chain(first: pd.DataFrame | None, rest: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    if first is None:
        return
    yield first
    yield from rest
