"""The SQL of live accuracy: the runs to score, their rows, and the stored scores.

A run's scores are replaced whole in one transaction (delete, insert), so scoring again after
late orders leaves exactly the new figures, and scoring unchanged data leaves the same ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Engine, delete, func, insert, select

from featurestore.tables import AccuracyDay, AccuracyScore, ForecastRow, ForecastRun


@dataclass(frozen=True)
class Snapshot:
    """A complete forecast run, as scoring needs it."""

    run_id: str
    model_version: str
    as_of: dt.date
    horizon: int
    quantiles: list[float]


def snapshots(engine: Engine, *, since: dt.date | None, until: dt.date) -> list[Snapshot]:
    """Complete runs made from ``since`` on whose first day (as_of + 1) is at most ``until``."""
    query = select(
        ForecastRun.run_id,
        ForecastRun.model_version,
        ForecastRun.as_of,
        ForecastRun.horizon,
        ForecastRun.quantiles,
    ).where(ForecastRun.status == "complete", ForecastRun.as_of < until)
    if since is not None:
        query = query.where(ForecastRun.as_of >= since)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(ForecastRun.as_of, ForecastRun.run_id)).all()
    return [Snapshot(r[0], r[1], r[2], int(r[3]), list(r[4])) for r in rows]


@dataclass(frozen=True)
class RunRows:
    """A stored run's rows as arrays (P10 and P90 None when the run has not both levels)."""

    sku: npt.NDArray[np.object_]
    day: npt.NDArray[np.int64]  # days since 1970-01-01
    mean: npt.NDArray[np.float64]
    p10: npt.NDArray[np.float64] | None
    p90: npt.NDArray[np.float64] | None


def _element(pg: bool, i: int) -> str:
    """SQL: element ``i`` of the quantiles JSON array, as a number."""
    return (
        f"CAST(quantiles ->> {i} AS DOUBLE PRECISION)"
        if pg
        else f"json_extract(quantiles, '$[{i}]')"
    )


def run_rows(engine: Engine, runs: Sequence[Snapshot], until: dt.date) -> Iterator[RunRows]:
    """Each run's rows up to ``until``, in order: one statement per run on the driver's own
    cursor (plain tuples), P10 and P90 taken out of the JSON by the database."""
    table = ForecastRow.__tablename__
    with engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        mark = "%({})s" if pg else ":{}"
        for run in runs:
            levels = [round(float(q), 6) for q in run.quantiles]
            both = 0.1 in levels and 0.9 in levels
            extra = (
                f", {_element(pg, levels.index(0.1))}, {_element(pg, levels.index(0.9))}"
                if both
                else ""
            )
            cursor = conn.connection.cursor()
            try:
                cursor.execute(
                    f"SELECT sku, date, mean{extra} FROM {table} WHERE run_id = "
                    f"{mark.format('run')} AND date <= {mark.format('until')} ORDER BY sku, date",
                    {"run": run.run_id, "until": until if pg else until.isoformat()},
                )
                rows = cursor.fetchall()
            finally:
                cursor.close()
            width = 5 if both else 3
            cols: list[Any] = list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]
            day = np.array(cols[1], dtype="datetime64[D]").astype(np.int64)
            yield RunRows(
                sku=np.array(cols[0], dtype=object),
                day=day,
                mean=np.array(cols[2], dtype=np.float64),
                p10=np.array(cols[3], dtype=np.float64) if both else None,
                p90=np.array(cols[4], dtype=np.float64) if both else None,
            )


@dataclass
class Scored:
    """One run's scores, ready to store."""

    run: Snapshot
    scores: Sequence[dict[str, Any]]
    per_day: Sequence[dict[str, Any]]
    days: int


def save_scores(engine: Engine, scored: Sequence[Scored], scored_at: dt.datetime) -> None:
    """Replace these runs' stored scores and per-day sums, all in one transaction."""
    ids = [s.run.run_id for s in scored]
    scores, days = [], []
    for s in scored:
        head = {"run_id": s.run.run_id, "model_version": s.run.model_version, "as_of": s.run.as_of}
        scores += [{**head, **row, "days": s.days, "scored_at": scored_at} for row in s.scores]
        days += [{**head, **row} for row in s.per_day]
    with engine.begin() as conn:
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            conn.execute(delete(AccuracyScore).where(AccuracyScore.run_id.in_(part)))
            conn.execute(delete(AccuracyDay).where(AccuracyDay.run_id.in_(part)))
        if scores:
            conn.execute(insert(AccuracyScore), scores)
        if days:
            conn.execute(insert(AccuracyDay), days)


def stored_scores(engine: Engine, *, since: dt.date | None, levels: Sequence[str]) -> pd.DataFrame:
    """Stored scores of these levels for runs made from ``since`` on (one row per run, group)."""
    query = select(AccuracyScore).where(AccuracyScore.level.in_(list(levels)))
    if since is not None:
        query = query.where(AccuracyScore.as_of >= since)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    columns = [c.name for c in AccuracyScore.__table__.columns]
    return pd.DataFrame([dict(r) for r in rows], columns=columns)


def day_sums(
    engine: Engine,
    *,
    start: dt.date,
    end: dt.date,
    model_version: str | None = None,
) -> pd.DataFrame:
    """Stored per-day sums of target days start..end (of one model version if given)."""
    query = select(AccuracyDay).where(AccuracyDay.date >= start, AccuracyDay.date <= end)
    if model_version is not None:
        query = query.where(AccuracyDay.model_version == model_version)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    columns = [c.name for c in AccuracyDay.__table__.columns]
    return pd.DataFrame([dict(r) for r in rows], columns=columns)


def last_scored_day(engine: Engine) -> dt.date | None:
    """The latest target day with stored accuracy."""
    with engine.connect() as conn:
        value = conn.execute(select(func.max(AccuracyDay.date))).scalar_one()
    return value if value is None or isinstance(value, dt.date) else dt.date.fromisoformat(value)


__all__ = [
    "RunRows",
    "Scored",
    "Snapshot",
    "day_sums",
    "last_scored_day",
    "run_rows",
    "save_scores",
    "snapshots",
    "stored_scores",
]
