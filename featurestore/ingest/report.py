"""What one ingestion reports, the errors it raises, and its rows in ingestion_log.

The log is also what makes a load idempotent: a checksum this entity already loaded is
looked up here first, and the repeat is skipped ("unchanged"), saying whether later loads may
have changed its rows since (``force`` loads it again).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select

from featurestore.tables import IngestionLog


@dataclass
class MixedDays:
    """SKU-days a load touched where directly loaded daily sales and order lines meet.

    The rule (docs/operations.md): a day's direct total is authoritative. An order load stores
    the day's lines but leaves its direct row alone (``kept``); a daily sales load replaces an
    order-derived row whole (``replaced``).
    """

    SHOWN = 10  # days listed in reports; the count covers all of them

    outcome: str  # "kept" | "replaced"
    count: int
    first: list[str]  # "SKU YYYY-MM-DD" of the first SHOWN days, by SKU and day

    def describe(self) -> str:
        if self.outcome == "kept":
            what = "keep their directly loaded daily sales (order lines stored, not summed)"
        else:
            what = "had daily sales derived from order lines, now replaced by the file's"
        more = (
            f", and {self.count - len(self.first):,} more" if self.count > len(self.first) else ""
        )
        return f"{self.count:,} SKU-day(s) {what}: {', '.join(self.first)}{more}"


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
    mixed: MixedDays | None = None  # days where direct daily sales and order lines met

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
    if report.mixed is not None:
        detail["mixed_days"] = {
            "outcome": report.mixed.outcome,
            "count": report.mixed.count,
            "first": report.mixed.first,
        }
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


def later_loads(engine: Engine, entities: Sequence[str], after: IngestionLog | None) -> int:
    """Loads of ``entities`` logged after ``after`` (all of them when it is None)."""
    with engine.connect() as conn:
        query = select(func.count()).where(
            IngestionLog.entity.in_(list(entities)), IngestionLog.status == "loaded"
        )
        if after is not None:
            query = query.where(IngestionLog.id > after.id)
        return int(conn.execute(query).scalar_one())


def unchanged_report(
    entity: str,
    source: str,
    checksum: str,
    previous: IngestionLog | None,
    started: float,
    *,
    later: int = 0,
    overlapping: Sequence[str] = (),
) -> IngestReport:
    """A repeat skipped: when its content was loaded, and whether later loads may have changed
    its rows since (``later`` loads of ``overlapping`` entities), which --force re-applies."""
    when = previous.finished_at or previous.started_at if previous is not None else None
    detail = f"already loaded{f' at {when:%Y-%m-%d %H:%M:%S}' if when else ''}; skipped"
    if later:
        names = " or ".join(overlapping)
        detail += (
            f" although {later:,} later load(s) of {names} may have changed its rows since "
            "(--force loads it again)"
        )
    else:
        detail += f", nothing changed (no later load of {' or '.join(overlapping)})"
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
        detail=detail,
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
