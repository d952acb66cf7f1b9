"""Drift decisions as events: what an operator lists, and what serving reads its fallback from.

Kinds: ``checked`` (no drift), ``insufficient_data``, ``retrain_started``, ``retrain_skipped``
(one already started today, or a retrain is running), ``fallback_on``, ``fallback_pending``
(the champion fails but a retrain is under way), ``fallback_off``. The newest ``fallback_on`` or
``fallback_off`` event is the fallback's state; a ``fallback_on`` applies only while its
``model_version`` is the champion (a new champion ends it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select

from featurestore.tables import DriftEvent

FALLBACK_KINDS = ("fallback_on", "fallback_off")


@dataclass(frozen=True)
class Event:
    """One stored drift decision."""

    id: int
    at: dt.datetime
    kind: str
    model_version: str | None
    job_id: str | None
    detail: dict[str, Any]


def _event(row: Any) -> Event:
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=dt.UTC)
    return Event(row.id, at, row.kind, row.model_version, row.job_id, dict(row.detail or {}))


def record(
    engine: Engine,
    kind: str,
    *,
    model_version: str | None,
    detail: dict[str, Any],
    job_id: str | None = None,
    at: dt.datetime | None = None,
) -> Event:
    """Store one event; returns it with its id."""
    when = at or dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        new_id = conn.execute(
            insert(DriftEvent)
            .values(at=when, kind=kind, model_version=model_version, job_id=job_id, detail=detail)
            .returning(DriftEvent.id)
        ).scalar_one()
    return Event(int(new_id), when, kind, model_version, job_id, detail)


def list_events(
    engine: Engine, *, since: dt.datetime | None = None, kind: str | None = None, limit: int = 100
) -> list[Event]:
    """The newest events first (from ``since``, of one ``kind``), at most ``limit``."""
    query = select(DriftEvent)
    if since is not None:
        query = query.where(DriftEvent.at >= since)
    if kind is not None:
        query = query.where(DriftEvent.kind == kind)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(DriftEvent.id.desc()).limit(limit)).all()
    return [_event(r) for r in rows]


def fallback_state(engine: Engine) -> Event | None:
    """The newest fallback_on or fallback_off event (None: there never was a fallback)."""
    query = (
        select(DriftEvent)
        .where(DriftEvent.kind.in_(FALLBACK_KINDS))
        .order_by(DriftEvent.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else _event(row)
