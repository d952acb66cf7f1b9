"""PostgreSQL bulk loading: binary COPY streamed from Arrow tables, and index drop and rebuild.

The rows travel in PostgreSQL's binary COPY format, built column by column with pyarrow and
numpy, so the server parses no text. A table that grows by a large share of its rows is
loaded with its indexes dropped and built once afterwards (cheaper than inserting every row
into them); the DDL holds ACCESS EXCLUSIVE until commit and rolls back with the transaction.
Measured effects: docs/benchmarks.md (Ingestion).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import BigInteger, Boolean, Connection, Date, DateTime, Float, Integer, Table
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

# A file with at least this share of the table's rows (and at least REBUILD_MIN_ROWS) is
# appended with the table's indexes dropped and built again afterwards.
REBUILD_SHARE = 0.5
REBUILD_MIN_ROWS = 50_000

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
COPY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_PG_EPOCH_DAYS = 10_957
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", type=pa.binary())  # length -1


def binary_type(sqltype: Any) -> str:
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


def binary_rows(table: pa.Table, kinds: Sequence[str]) -> pa.Buffer:
    """A table's rows in PostgreSQL's binary COPY format (without signature and trailer)."""
    n = table.num_rows
    parts = [_fixed_width(np.full(n, table.num_columns, dtype=">i2"), 2)]
    for column, kind in zip(table.columns, kinds, strict=True):
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        parts += _binary_fields(arr, kind)
    rows = pc.binary_join_element_wise(*parts, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n + 1, offset=rows.offset * 4)
    return rows.buffers()[2][int(offsets[0]) : int(offsets[-1])]


def _quoted(conn: Connection, names: Sequence[str]) -> str:
    return ", ".join(str(conn.dialect.identifier_preparer.quote(n)) for n in names)


class CopyStream:
    """One binary COPY into ``target`` for a whole file, opened by its first chunk.

    A queued writer hands the bytes to a thread that sends them (socket I/O releases the GIL),
    so this thread parses and validates the next chunk while the server takes this one.
    """

    def __init__(self, conn: Connection, target: str, columns: Table) -> None:
        self.conn = conn
        self.target = target
        self.columns = columns  # the table whose column types the rows take (``_row``: int8)
        self._stack: contextlib.ExitStack | None = None
        self._stream: Any = None

    def write(self, table: pa.Table) -> None:
        types = [
            binary_type(self.columns.c[n].type) if n != "_row" else "int8"
            for n in table.column_names
        ]
        data = binary_rows(table, types)
        if self._stream is None:
            raw = self.conn.connection.driver_connection
            assert raw is not None
            stack = contextlib.ExitStack()
            cur = stack.enter_context(raw.cursor())
            self._stream = stack.enter_context(
                cur.copy(
                    f"COPY {self.target} ({_quoted(self.conn, table.column_names)}) "
                    "FROM STDIN (FORMAT binary)",
                    writer=QueuedLibpqWriter(cur),
                )
            )
            self._stack = stack
            self._stream.write(COPY_SIGNATURE)
        # A memoryview: the writer slices it into the queue without copying the bytes.
        self._stream.write(memoryview(data))

    def finish(self) -> None:
        """End the COPY, waiting for the server to take every row."""
        if self._stack is not None:
            self._stream.write(COPY_TRAILER)
            stack, self._stack = self._stack, None
            self._stream = None
            stack.close()

    def abort(self, *exc: Any) -> None:
        """End a COPY a failure interrupted, so that the rollback can run."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.__exit__(*exc)


def copy_rows(conn: Connection, target: str, table: pa.Table, kinds: Sequence[str]) -> None:
    """All of ``table`` into ``target`` in one binary COPY (a table small enough to build)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    data = binary_rows(table, kinds)
    with (
        raw.cursor() as cur,
        cur.copy(
            f"COPY {target} ({_quoted(conn, table.column_names)}) FROM STDIN (FORMAT binary)"
        ) as copy,
    ):
        copy.write(COPY_SIGNATURE)
        copy.write(memoryview(data))
        copy.write(COPY_TRAILER)


def drop_indexes(conn: Connection, table: Table) -> None:
    """Drop a table's indexes and primary key (ACCESS EXCLUSIVE until commit)."""
    dialect = conn.dialect
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        conn.exec_driver_sql(str(DropIndex(index).compile(dialect=dialect)))
    conn.exec_driver_sql(str(DropConstraint(table.primary_key).compile(dialect=dialect)))


def build_indexes(conn: Connection, table: Table) -> None:
    dialect = conn.dialect
    conn.exec_driver_sql(str(AddConstraint(table.primary_key).compile(dialect=dialect)))
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        conn.exec_driver_sql(str(CreateIndex(index).compile(dialect=dialect)))


def worth_rebuilding(conn: Connection, table: str, rows: int) -> bool:
    """True when ``rows`` new rows are at least ``REBUILD_SHARE`` of the rows already in
    ``table`` (and at least ``REBUILD_MIN_ROWS``)."""
    if rows < REBUILD_MIN_ROWS:
        return False
    estimate = conn.exec_driver_sql(
        f"SELECT reltuples FROM pg_class WHERE oid = '{table}'::regclass"
    ).scalar()
    if estimate is None or estimate < 0:  # never analysed: count, but no further than needed
        limit = int(rows / REBUILD_SHARE) + 1
        estimate = conn.exec_driver_sql(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {limit}) x"
        ).scalar()
    return rows >= REBUILD_SHARE * float(estimate or 0)
