"""The entry points and the transaction of one load: read, validate, stage, check, merge, log.

One file is one transaction. Its sha256 (with the column mapping) is looked up first: a file
this entity already loaded is skipped and reports "unchanged", saying whether later loads may
have changed its rows since; ``force=True`` loads it again. Otherwise chunks are read,
validated (featurestore.validate) and staged; keys found more than once are rejected, every
copy. Within ``max_reject`` the rows are merged with the entity's steps and the ingestion_log
row is written, then the transaction commits: a crash before that leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import csv
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine

from featurestore import m5
from featurestore.config import get_settings
from featurestore.ingest.chunks import Chunk, planned
from featurestore.ingest.entities import INGEST_ENTITIES, IngestEntity
from featurestore.ingest.keys import KeyIndex, duplicate_rejects
from featurestore.ingest.reading import ContentHash, file_checksum, open_file
from featurestore.ingest.rejects import (
    RejectSink,
    data_reject_path,
    default_reject_path,
    merge_rejects,
)
from featurestore.ingest.report import (
    IngestError,
    IngestReport,
    TooManyRejects,
    Unchanged,
    fail,
    later_loads,
    log_outside,
    previous_load,
    previous_load_in,
    unchanged_report,
)
from featurestore.ingest.store import Store
from featurestore.pseudonyms import Pseudonymiser
from featurestore.schema import ENTITIES, Entity
from featurestore.tables import IngestionLog
from featurestore.validate import (
    ColumnPlan,
    Context,
    PlanError,
    SourceOptions,
    check_chunk,
    empty_rejects,
    resolve_columns,
)

Progress = Callable[[int], None]
# Told the name of each step after reading (staging, keys, merge, commit): they can take as long.
Phase = Callable[[str], None]


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
    force: bool = False,
    options: SourceOptions | None = None,
    on_phase: Phase | None = None,
) -> IngestReport:
    """Load one CSV or Parquet file of ``entity`` in one transaction (see the module docstring)."""
    options = options or SourceOptions()
    started, started_at = time.perf_counter(), datetime.now(UTC)
    ent, spec = _entity(entity)
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise IngestError(f"no such file: {path}")
    pseudonyms = Pseudonymiser.from_settings(get_settings())
    checksum = file_checksum(path, mapping, options.fingerprint(ent, pseudonyms))
    previous = None if force else previous_load(engine, ent.name, checksum)
    if previous is not None:
        return _skipped(engine, ent, spec, source, checksum, previous, (started, started_at))
    rows = chunk_rows or get_settings().ingest_chunk_rows
    target = reject_path or default_reject_path(path)
    try:
        plan, chunks = open_file(
            path, ent, mapping, rows, keep_extras=spec.keep_extras, ignore=options.ignore
        )
    except (PlanError, OSError, pa.ArrowException, csv.Error, ValueError) as exc:
        fail(engine, ent.name, source, checksum, started, started_at, str(exc))
        raise IngestError(f"{path.name}: {exc}") from exc
    return _load(
        engine,
        ent,
        spec,
        plan,
        chunks,
        source=source,
        checksum=checksum,
        max_reject=max_reject,
        reject_path=target,
        stale_rejects=reject_path is None,
        progress=progress,
        on_phase=on_phase,
        started=(started, started_at),
        force=force,
        options=options,
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
    force: bool = False,
    on_phase: Phase | None = None,
) -> IngestReport:
    """Load generated frames (entity column names) through the same validation and transaction."""
    started, started_at = time.perf_counter(), datetime.now(UTC)
    ent, spec = _entity(entity)
    rows = chunk_rows or get_settings().ingest_chunk_rows
    target = reject_path or data_reject_path(f"{source}.{ent.name}")
    if isinstance(frames, pd.DataFrame):  # iterating a frame would yield its column names
        frames = [frames]
    iterator = iter(frames)
    first = next(iterator, None)
    columns = list(first.columns) if first is not None else list(ent.required)
    try:
        plan = resolve_columns(ent, [str(c) for c in columns])
    except PlanError as exc:
        raise IngestError(f"{source}: {exc}") from exc
    extras = plan.extras if spec.keep_extras else ()

    checksum = None
    if isinstance(frames, Sequence):
        # Frames already in memory: hash them first, so a repeat skips validation and staging.
        content = ContentHash()
        for frame in frames:
            content.update(planned(frame, plan, extras))
        checksum = content.hexdigest()
        previous = None if force else previous_load(engine, ent.name, checksum)
        if previous is not None:
            return _skipped(engine, ent, spec, source, checksum, previous, (started, started_at))

    def chunks() -> Iterator[Chunk]:
        start = 0
        for frame in _chain(first, iterator):
            for lo in range(0, len(frame), rows):
                part = planned(frame.iloc[lo : lo + rows], plan, extras)
                yield Chunk(part, np.arange(start + 1, start + len(part) + 1), empty_rejects())
                start += len(part)

    return _load(
        engine,
        ent,
        spec,
        plan,
        chunks(),
        source=source,
        checksum=checksum,
        max_reject=max_reject,
        reject_path=target,
        stale_rejects=False,
        progress=progress,
        on_phase=on_phase,
        started=(started, started_at),
        force=force,
    )


def import_m5(
    engine: Engine,
    path: Path,
    progress: Progress | None = None,
    on_phase: Phase | None = None,
    *,
    force: bool = False,
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
        entity: ingest_frames(
            engine,
            entity,
            [frame],
            source=f"{path}#{entity}",
            progress=progress,
            on_phase=on_phase,
            force=force,
        )
        for entity, frame in frames.items()
    }


def _load(
    engine: Engine,
    ent: Entity,
    spec: IngestEntity,
    plan: ColumnPlan,
    chunks: Iterable[Chunk],
    *,
    source: str,
    checksum: str | None,
    max_reject: float | None,
    reject_path: Path,
    stale_rejects: bool,
    progress: Progress | None,
    on_phase: Phase | None,
    started: tuple[float, datetime],
    force: bool,
    options: SourceOptions | None = None,
) -> IngestReport:
    settings = get_settings()
    phase = on_phase or (lambda _name: None)
    limit = settings.max_reject_share if max_reject is None else max_reject
    sink = RejectSink(reject_path, private=ent.private & plan.present)
    hasher = ContentHash() if checksum is None else None
    extras = list(plan.extras) if spec.keep_extras else []
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
        ignored_columns=[] if spec.keep_extras else list(plan.extras),
    )
    try:
        with (
            engine.begin() as conn,
            Store(conn, ent, spec, plan, extras) as store,
            contextlib.ExitStack() as stack,
        ):
            ctx = Context(
                today=datetime.now(ZoneInfo(settings.timezone)).date(),
                timezone=settings.timezone,
                known_skus=store.known_skus(),
                present=plan.present,
                options=options or SourceOptions(),
                pseudonyms=Pseudonymiser.from_settings(settings),
            )
            keys = stack.enter_context(KeyIndex(ent))
            for chunk in chunks:
                if hasher is not None:
                    hasher.update(chunk.frame)
                checked = check_chunk(ent, chunk.frame, chunk.rows, ctx, extras)
                sink.add(merge_rejects(chunk.rejects, checked.rejects))
                store.write(checked.frame)
                keys.add(checked.frame)
                report.rows_read += chunk.size
                if progress is not None:
                    progress(chunk.size)
            phase(f"staging {report.rows_read:,} rows")
            store.finish_staging()
            if hasher is not None:
                report.checksum = hasher.hexdigest()
                previous = None if force else previous_load_in(conn, ent.name, report.checksum)
                if previous is not None:
                    raise Unchanged(previous)
            phase("checking for duplicate keys")
            duplicates = keys.duplicates()
            sink.add_late(duplicate_rejects(duplicates, ent))
            store.drop(duplicates)
            report.rows_rejected = sink.count
            report.rows_accepted = report.rows_read - report.rows_rejected
            report.reasons = dict(sink.reasons.most_common())
            report.reject_path = sink.path if sink.count else None
            if report.reject_share > limit:
                raise TooManyRejects(report, limit)
            phase(f"merging {report.rows_accepted:,} rows into {ent.name}")
            store.merge()
            report.mixed = store.mixed
            report.status = "loaded"
            report.seconds = time.perf_counter() - started[0]
            store.log(report, started[1])
            phase("committing")
    except Unchanged as unchanged:
        sink.discard()
        return _skipped(engine, ent, spec, source, report.checksum, unchanged.previous, started)
    except TooManyRejects as exc:
        sink.finish(stale=stale_rejects)
        exc.report.seconds = time.perf_counter() - started[0]
        log_outside(engine, exc.report, started[1])
        raise
    except (PlanError, OSError, pa.ArrowException, csv.Error, UnicodeError, ValueError) as exc:
        sink.discard()
        fail(engine, ent.name, source, report.checksum, started[0], started[1], str(exc))
        raise IngestError(f"{Path(source).name}: {exc}") from exc
    except BaseException:
        sink.discard()
        raise
    report.reject_path = sink.finish(stale=stale_rejects)
    return report


def _skipped(
    engine: Engine,
    ent: Entity,
    spec: IngestEntity,
    source: str,
    checksum: str,
    previous: IngestionLog | None,
    started: tuple[float, datetime],
) -> IngestReport:
    """A repeat of loaded content, skipped and logged; it says whether later loads may have
    changed its rows since."""
    overlapping = (ent.name, *spec.overlaps)
    later = later_loads(engine, overlapping, previous)
    report = unchanged_report(
        ent.name, source, checksum, previous, started[0], later=later, overlapping=overlapping
    )
    log_outside(engine, report, started[1])
    return report


def _entity(name: str) -> tuple[Entity, IngestEntity]:
    try:
        return ENTITIES[name], INGEST_ENTITIES[name]
    except KeyError:
        raise IngestError(f"unknown entity {name!r}; choose one of {', '.join(ENTITIES)}") from None


def _chain(first: pd.DataFrame | None, rest: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    if first is None:
        return
    yield first
    yield from rest
