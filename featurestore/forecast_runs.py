"""Stored forecast-all runs: written in bulk, visible only once complete, read by cursor."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert, select, update

from featurestore.tables import ForecastRow, ForecastRun

INSERT_BATCH = 10_000
CachedDay = tuple[dt.date, float, list[float], bool]


@dataclass(frozen=True)
class RunInfo:
    """A complete run's header."""

    run_id: str
    model_version: str
    as_of: dt.date
    data_token: str
    horizon: int
    quantiles: list[float]
    rows: int
    completed_at: dt.datetime | None


def save_run(
    engine: Engine,
    frame: pd.DataFrame,
    *,
    model_version: str,
    as_of: dt.date,
    data_token: str,
    horizon: int,
    quantiles: Sequence[float],
    quantile_columns: Sequence[str],
    read_at: dt.datetime | None = None,
) -> str:
    """Store a whole forecast-all result; it becomes visible when its status turns complete.

    ``read_at`` (its created_at): when the run began to read its data (default: now).
    """
    run_id = str(uuid.uuid4())
    now = read_at or dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(ForecastRun).values(
                run_id=run_id,
                model_version=model_version,
                as_of=as_of,
                data_token=data_token,
                horizon=horizon,
                quantiles=list(quantiles),
                status="running",
                rows=0,
                created_at=now,
            )
        )
    try:
        skus = frame["sku"].astype(str).to_numpy()
        dates = pd.to_datetime(frame["date"]).dt.date.to_numpy()
        means = frame["mean"].to_numpy(dtype=np.float64)
        qv = frame[list(quantile_columns)].to_numpy(dtype=np.float64)
        cold = (
            frame["cold_start"].to_numpy(dtype=bool)
            if "cold_start" in frame
            else np.zeros(len(frame), dtype=bool)
        )
        with engine.begin() as conn:
            for start in range(0, len(frame), INSERT_BATCH):
                stop = start + INSERT_BATCH
                conn.execute(
                    insert(ForecastRow),
                    [
                        {
                            "run_id": run_id,
                            "sku": s,
                            "date": d,
                            "mean": float(m),
                            "quantiles": [round(float(v), 4) for v in q],
                            "cold_start": bool(c),
                        }
                        for s, d, m, q, c in zip(
                            skus[start:stop],
                            dates[start:stop],
                            means[start:stop],
                            qv[start:stop],
                            cold[start:stop],
                            strict=True,
                        )
                    ],
                )
            conn.execute(
                update(ForecastRun)
                .where(ForecastRun.run_id == run_id)
                .values(status="complete", rows=len(frame), completed_at=dt.datetime.now(dt.UTC))
            )
    except BaseException:
        with engine.begin() as conn:
            conn.execute(delete(ForecastRow).where(ForecastRow.run_id == run_id))
            conn.execute(
                update(ForecastRun).where(ForecastRun.run_id == run_id).values(status="failed")
            )
        raise
    return run_id


def latest_run(engine: Engine, *, until: dt.date | None = None) -> RunInfo | None:
    """The complete run of the latest as-of (up to ``until``), newest first; or None.

    Ordered by as-of before completion time, so a back-dated run made today does not displace
    the current one; ``until`` (the store's last sales day) keeps runs dated after the data out.
    """
    query = select(ForecastRun).where(ForecastRun.status == "complete")
    if until is not None:
        query = query.where(ForecastRun.as_of <= until)
    with engine.connect() as conn:
        row = conn.execute(
            query.order_by(ForecastRun.as_of.desc(), ForecastRun.completed_at.desc()).limit(1)
        ).first()
    if row is None:
        return None
    r = row._mapping
    return RunInfo(
        r["run_id"],
        r["model_version"],
        r["as_of"],
        r["data_token"],
        r["horizon"],
        list(r["quantiles"]),
        r["rows"],
        r["completed_at"],
    )


def page_skus(engine: Engine, run_id: str, *, after: str | None, limit: int) -> list[str] | None:
    """The run's SKUs after the cursor, in order, at most ``limit`` of them.

    None if ``after`` is not one of the run's SKUs: a cursor this export never gave would
    otherwise answer a page from anywhere (or an empty one that looks like the end).
    """
    query = select(ForecastRow.sku).where(ForecastRow.run_id == run_id).distinct()
    with engine.connect() as conn:
        if after is not None:
            known = conn.execute(
                select(ForecastRow.sku)
                .where(ForecastRow.run_id == run_id, ForecastRow.sku == after)
                .limit(1)
            ).first()
            if known is None:
                return None
            query = query.where(ForecastRow.sku > after)
        return list(conn.execute(query.order_by(ForecastRow.sku).limit(limit)).scalars())


def iter_rows(
    engine: Engine, run_id: str, skus: Sequence[str]
) -> Iterator[tuple[str, dt.date, float, list[float], bool]]:
    """The run's rows for these SKUs, ordered by (sku, date), streamed from the database."""
    if not skus:
        return
    query = (
        select(
            ForecastRow.sku,
            ForecastRow.date,
            ForecastRow.mean,
            ForecastRow.quantiles,
            ForecastRow.cold_start,
        )
        .where(ForecastRow.run_id == run_id, ForecastRow.sku.in_(list(skus)))
        .order_by(ForecastRow.sku, ForecastRow.date)
    )
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=5_000).execute(query):
            yield row.sku, row.date, row.mean, list(row.quantiles), row.cold_start


@dataclass(frozen=True)
class StoredForecasts:
    """The rows of a complete run for a list of SKUs: (date, mean, quantiles, cold) per SKU."""

    run_id: str
    quantiles: list[float]
    as_of: dt.date
    rows: dict[str, list[CachedDay]]
    read_at: dt.datetime  # when the run began to read its data (its created_at)


def cached_forecasts(
    engine: Engine,
    model_version: str,
    data_token: str,
    horizon: int,
    skus: Sequence[str],
    *,
    as_of: dt.date,
) -> StoredForecasts | None:
    """The newest complete run for this model, data and as-of, with its rows for these SKUs.

    ``as_of`` is the store's last sales day: a run from another origin (a back-dated
    ``forecast-all --as-of``) is never an answer for today, even on the same data.

    Two statements whatever the number of SKUs: the run, then every SKU's rows at once (in
    chunks of 900 SKUs, below SQLite's bound-parameter limit). SKUs the run lacks are absent.
    """
    wanted = sorted(set(skus))
    with engine.connect() as conn:
        run = conn.execute(
            select(
                ForecastRun.run_id, ForecastRun.quantiles, ForecastRun.as_of, ForecastRun.created_at
            )
            .where(
                ForecastRun.status == "complete",
                ForecastRun.model_version == model_version,
                ForecastRun.data_token == data_token,
                ForecastRun.as_of == as_of,
                ForecastRun.horizon >= horizon,
            )
            .order_by(ForecastRun.completed_at.desc())
            .limit(1)
        ).first()
        if run is None:
            return None
        last = run.as_of + dt.timedelta(days=horizon)
        rows: dict[str, list[CachedDay]] = {}
        for i in range(0, len(wanted), 900):
            chunk = wanted[i : i + 900]
            query = select(
                ForecastRow.sku,
                ForecastRow.date,
                ForecastRow.mean,
                ForecastRow.quantiles,
                ForecastRow.cold_start,
            ).where(ForecastRow.run_id == run.run_id, ForecastRow.date <= last)
            query = query.where(
                ForecastRow.sku == chunk[0] if len(chunk) == 1 else ForecastRow.sku.in_(chunk)
            )
            for sku, day, mean, qs, cold in conn.execute(
                query.order_by(ForecastRow.sku, ForecastRow.date)
            ):
                rows.setdefault(sku, []).append((day, mean, qs, cold))
    read_at = run.created_at
    if read_at.tzinfo is None:  # SQLite gives naive datetimes back (stored in UTC)
        read_at = read_at.replace(tzinfo=dt.UTC)
    return StoredForecasts(run.run_id, list(run.quantiles), run.as_of, rows, read_at)
