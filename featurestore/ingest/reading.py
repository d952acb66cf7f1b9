"""Reading sources: files opened as a column plan and a stream of chunks, and their checksums.

Parquet is read in row batches decoded by a thread a little ahead of validation; CSV in
record-aligned blocks (featurestore.ingest.csvfile).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.ingest.chunks import Chunk, decode_columns, split_undecodable, wanted
from featurestore.ingest.csvfile import block_bytes, csv_chunks, csv_header
from featurestore.schema import Entity
from featurestore.validate import ColumnPlan, resolve_columns

HASH_BLOCK = 1 << 20
_PARQUET_MAGIC = b"PAR1"


def open_file(
    path: Path,
    ent: Entity,
    mapping: Mapping[str, str] | None,
    chunk_rows: int,
    *,
    keep_extras: bool,
    ignore: Sequence[str] = (),
) -> tuple[ColumnPlan, Iterator[Chunk]]:
    """The file's column plan and its chunks; ``keep_extras``: unplanned columns are read too,
    ``ignore``: source columns read as if absent."""
    if is_parquet(path):
        parquet = pq.ParquetFile(path)
        plan = resolve_columns(ent, list(parquet.schema_arrow.names), mapping, ignore)
        extras = plan.extras if keep_extras else ()
        return plan, _parquet_chunks(parquet, plan, extras, chunk_rows)
    names, delimiter, body_at, sample = csv_header(path)
    plan = resolve_columns(ent, names, mapping, ignore)
    extras = plan.extras if keep_extras else ()
    block = block_bytes(sample, chunk_rows)
    return plan, csv_chunks(path, names, delimiter, body_at, block, plan, extras, chunk_rows)


def is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == _PARQUET_MAGIC


def _parquet_chunks(
    parquet: pq.ParquetFile, plan: ColumnPlan, extras: Sequence[str], chunk_rows: int
) -> Iterator[Chunk]:
    start = 0
    batches = parquet.iter_batches(batch_size=chunk_rows, columns=wanted(plan, extras))
    for batch in prefetched(batches):
        rows = np.arange(start + 1, start + batch.num_rows + 1, dtype=np.int64)
        start += batch.num_rows
        arrays, bad = decode_columns(batch.columns, batch.schema.names)
        table = pa.Table.from_arrays(arrays, names=batch.schema.names)
        yield split_undecodable(table, rows, bad, plan, extras)


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
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


def file_checksum(
    path: Path, mapping: Mapping[str, str] | None = None, options: Mapping[str, Any] | None = None
) -> str:
    """sha256 of the file's bytes, folded with the column mapping and the options that change
    what it loads as, when there are any."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_BLOCK):
            digest.update(block)
    if not mapping and not options:
        return digest.hexdigest()
    folded = hashlib.sha256(digest.hexdigest().encode())
    folded.update(json.dumps(dict(sorted((mapping or {}).items()))).encode())
    if options:
        folded.update(json.dumps(options, sort_keys=True).encode())
    return folded.hexdigest()


def estimate_rows(path: Path) -> int | None:
    """Data rows in a file: exact for Parquet, newlines minus the header for CSV."""
    path = Path(path)
    try:
        if is_parquet(path):
            return int(pq.ParquetFile(path).metadata.num_rows)
        lines, last = 0, b""
        with open(path, "rb") as fh:
            while block := fh.read(HASH_BLOCK):
                lines += block.count(b"\n")
                last = block
        if last and not last.endswith(b"\n"):
            lines += 1
        return max(lines - 1, 0)
    except (OSError, pa.ArrowException):
        return None


class ContentHash:
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
