"""The SQL of live accuracy: the runs to score, their rows, and the stored scores.

A run's scores are replaced whole in one transaction (delete, insert), so scoring again after
late orders leaves exactly the new figures, and scoring unchanged data leaves the same ones.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, delete, func, insert, select, text

from featurestore.tables import AccuracyDay, AccuracyScore, ForecastRow, ForecastRun

_RUNS_PER_READ = 20


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


def run_rows(engine: Engine, runs: Sequence[Snapshot], until: dt.date) -> Iterable[pd.DataFrame]:
    """Each run's rows up to ``until`` (sku, date, mean, quantiles), a frame per run, in order.

    Read a few runs per statement with the driver's own rows (no ORM objects: 60 nightly runs of
    a catalogue are hundreds of thousands of rows).
    """
    table = ForecastRow.__tablename__
    for lo in range(0, len(runs), _RUNS_PER_READ):
        part = runs[lo : lo + _RUNS_PER_READ]
        ids = [r.run_id for r in part]
        with engine.connect() as conn:
            marks = ", ".join(f":r{i}" for i in range(len(ids)))
            params: dict[str, Any] = {f"r{i}": v for i, v in enumerate(ids)}
            params["until"] = until
            result = conn.execute(
                text(
                    f"SELECT run_id, sku, date, mean, quantiles FROM {table} "
                    f"WHERE run_id IN ({marks}) AND date <= :until ORDER BY run_id, sku, date"
                ),
                params,
            ).all()
        frame = pd.DataFrame(result, columns=["run_id", "sku", "date", "mean", "quantiles"])
        if len(frame) and isinstance(frame["quantiles"].iloc[0], str):
            frame["quantiles"] = [json.loads(q) for q in frame["quantiles"].tolist()]
        frame["date"] = pd.to_datetime(frame["date"])
        groups = dict(tuple(frame.groupby("run_id", sort=False))) if len(frame) else {}
        for run in part:
            got = groups.get(run.run_id)
            yield (
                got.drop(columns="run_id").reset_index(drop=True)
                if got is not None
                else frame.iloc[:0].drop(columns="run_id")
            )


def save_scores(
    engine: Engine,
    run: Snapshot,
    scores: Sequence[dict[str, Any]],
    per_day: Sequence[dict[str, Any]],
    days: int,
    scored_at: dt.datetime,
) -> None:
    """Replace a run's stored scores and per-day sums with these, in one transaction."""
    head = {"run_id": run.run_id, "model_version": run.model_version, "as_of": run.as_of}
    with engine.begin() as conn:
        conn.execute(delete(AccuracyScore).where(AccuracyScore.run_id == run.run_id))
        conn.execute(delete(AccuracyDay).where(AccuracyDay.run_id == run.run_id))
        if scores:
            conn.execute(
                insert(AccuracyScore),
                [{**head, **s, "days": days, "scored_at": scored_at} for s in scores],
            )
        if per_day:
            conn.execute(insert(AccuracyDay), [{**head, **d} for d in per_day])


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
    "Snapshot",
    "day_sums",
    "last_scored_day",
    "run_rows",
    "save_scores",
    "snapshots",
    "stored_scores",
]
