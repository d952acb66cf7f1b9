"""What one ingestion reports, the errors it raises, and its rows in ingestion_log.

The log is also what makes a load idempotent: a checksum this entity already loaded is
looked up here first, and the repeat reports "unchanged".
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from featurestore.tables import IngestionLog


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


class Unchanged(Exception):
    """Generated frames whose content this entity already loaded."""

    def __init__(self, previous: IngestionLog | None) -> None:
        self.previous = previous


def log_values(report: IngestReport, started_at: datetime) -> dict[str, Any]:
    """The ingestion_log row of a report."""
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


def log_in(conn: Connection, report: IngestReport, started_at: datetime) -> None:
    """Record a load inside its own transaction (it commits with the rows)."""
    conn.execute(insert(IngestionLog).values(**log_values(report, started_at)))


def previous_load_in(conn: Connection, entity: str, checksum: str) -> IngestionLog | None:
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


def previous_load(engine: Engine, entity: str, checksum: str) -> IngestionLog | None:
    with engine.connect() as conn:
        return previous_load_in(conn, entity, checksum)


def unchanged_report(
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


def log_outside(engine: Engine, report: IngestReport, started_at: datetime) -> None:
    """Record an attempt that loaded nothing, in a transaction of its own."""
    with engine.begin() as conn:
        log_in(conn, report, started_at)


def fail(
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
        log_outside(engine, report, started_at)
