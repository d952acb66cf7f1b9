"""Live accuracy: score every stored forecast run whose days now have actuals, and read it back.

``score_snapshots`` (``salesfc accuracy``, the nightly job) reads the store's history once and
scores each complete run (training.accuracy), replacing its stored scores; ``accuracy_report``
(``GET /v1/accuracy``) adds the stored scores up by horizon day, segment or model version;
``live_window`` gives the champion's figures over the last days (Prometheus gauges, drift).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from featurestore import accuracy as store
from featurestore.readers import last_sales_date, read_products, read_units
from training.accuracy import (
    SEGMENTS,
    Actuals,
    Window,
    day_number,
    history_stats,
    score_run,
    window_of,
)

By = Literal["horizon", "segment", "model_version"]
LEVELS_BY: dict[str, tuple[str, ...]] = {
    "model_version": ("overall",),
    "horizon": ("horizon",),
    "segment": SEGMENTS,
}


@dataclass
class ScoringSummary:
    """What one scoring pass did."""

    runs: int = 0  # runs scored (with at least one day of actuals)
    skipped: int = 0  # runs whose days have no actuals yet
    rows: int = 0  # SKU-days scored
    last_day: dt.date | None = None  # the last day with actuals
    seconds: float = 0.0
    overall: list[dict[str, Any]] = field(default_factory=list)  # per model version
    # Per SKU-day errors of the last ``detail_days`` days with actuals (model_version, sku, date,
    # abs errors of the run, seasonal naive, moving average): what the drift check reads.
    detail: pd.DataFrame = field(default_factory=pd.DataFrame)


def score_snapshots(
    engine: Engine,
    *,
    since: dt.date | None = None,
    progress: Callable[[int, int], None] | None = None,
    detail_days: int = 0,
) -> ScoringSummary:
    """Score every complete run made from ``since`` on against the actuals known now."""
    started = time.perf_counter()
    summary = ScoringSummary()
    last = last_sales_date(engine)
    if last is None:
        return summary
    summary.last_day = last
    runs = store.snapshots(engine, since=since, until=last)
    if not runs:
        summary.seconds = time.perf_counter() - started
        return summary
    actuals = Actuals.of(read_units(engine, end=last), read_products(engine))
    scored_at = dt.datetime.now(dt.UTC)
    detail_from = last - dt.timedelta(days=detail_days - 1) if detail_days else None
    details = []
    scored = []
    # Scales and demand classes at every run's origin, in one pass over the history.
    origins = {run.run_id: day_number(run.as_of) - actuals.first_day for run in runs}
    stats = history_stats(actuals.units, [c for c in origins.values() if c >= 0])
    for i, (run, rows) in enumerate(zip(runs, store.run_rows(engine, runs, last), strict=True)):
        score = score_run(
            rows,
            actuals,
            as_of=run.as_of,
            detail_from=detail_from,
            stats=stats.get(origins[run.run_id]),
        )
        scored.append(store.Scored(run, score.scores, score.per_day, score.days))
        if score.detail is not None:
            details.append(score.detail.assign(model_version=run.model_version))
        if score.days:
            summary.runs += 1
            summary.rows += next(s["rows"] for s in score.scores if s["level"] == "overall")
        else:
            summary.skipped += 1
        if progress is not None:
            progress(i + 1, len(runs))
    # Every run's scores replaced in one transaction: a reader sees all old or all new.
    store.save_scores(engine, scored, scored_at)
    if details:
        summary.detail = pd.concat(details, ignore_index=True)
    summary.overall = accuracy_report(engine, since=since, by="model_version")["groups"]
    summary.seconds = time.perf_counter() - started
    return summary


def _add_up(frame: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    """Per group of stored rows: figures over all their SKU-days (sums, not means of means)."""
    if frame.empty:
        return []
    f = frame.copy()
    rows = f["rows"].astype(float)
    f["abs_error"] = f["mae"].astype(float) * rows
    f["error"] = f["bias"].astype(float) * f["actual_units"]
    f["naive_abs_error"] = f["naive_mae"].astype(float) * rows
    f["naive_error"] = f["naive_bias"].astype(float) * f["actual_units"]
    f["inside"] = f["coverage"].astype(float) * rows
    f["interval_rows"] = np.where(f["coverage"].notna(), rows, 0.0)
    f["rmsse_w"] = f["rmsse"].astype(float) * rows
    f["naive_rmsse_w"] = f["naive_rmsse"].astype(float) * rows
    f["rmsse_rows"] = np.where(f["rmsse"].notna(), rows, 0.0)
    f["naive_rmsse_rows"] = np.where(f["naive_rmsse"].notna(), rows, 0.0)
    f["runs"] = 1
    sums = f.groupby(keys, sort=True, dropna=False).agg(
        runs=("runs", "sum"),
        rows=("rows", "sum"),
        actual_units=("actual_units", "sum"),
        abs_error=("abs_error", "sum"),
        error=("error", "sum"),
        naive_abs_error=("naive_abs_error", "sum"),
        naive_error=("naive_error", "sum"),
        inside=("inside", "sum"),
        interval_rows=("interval_rows", "sum"),
        rmsse_w=("rmsse_w", "sum"),
        naive_rmsse_w=("naive_rmsse_w", "sum"),
        rmsse_rows=("rmsse_rows", "sum"),
        naive_rmsse_rows=("naive_rmsse_rows", "sum"),
        first_as_of=("as_of", "min"),
        last_as_of=("as_of", "max"),
    )

    def ratio(num: float, den: float) -> float | None:
        return float(num / den) if den and np.isfinite(num / den) else None

    out = []
    for key, s in sums.iterrows():
        values = key if isinstance(key, tuple) else (key,)
        group = dict(zip(keys, [str(v) for v in values], strict=True))
        wape, naive = ratio(s.abs_error, s.actual_units), ratio(s.naive_abs_error, s.actual_units)
        out.append(
            {
                **group,
                "runs": int(s.runs),
                "first_as_of": s.first_as_of,
                "last_as_of": s.last_as_of,
                "rows": int(s.rows),
                "actual_units": float(s.actual_units),
                "wape": wape,
                "rmsse": ratio(s.rmsse_w, s.rmsse_rows),
                "bias": ratio(s.error, s.actual_units),
                "mae": ratio(s.abs_error, s.rows),
                "coverage": ratio(s.inside, s.interval_rows),
                "naive_wape": naive,
                "naive_rmsse": ratio(s.naive_rmsse_w, s.naive_rmsse_rows),
                "naive_bias": ratio(s.naive_error, s.actual_units),
                "naive_mae": ratio(s.naive_abs_error, s.rows),
                "wape_vs_naive": None if wape is None or not naive else 1.0 - wape / naive,
            }
        )
    return out


def accuracy_report(engine: Engine, *, since: dt.date | None, by: By) -> dict[str, Any]:
    """Stored scores of runs made from ``since`` on, added up per group of ``by``.

    WAPE, bias, MAE and coverage are exact over the group's SKU-days; RMSSE is the mean of the
    runs' RMSSE weighted by their SKU-days (a scaled error is per series and run).
    """
    levels = LEVELS_BY[by]
    frame = store.stored_scores(engine, since=since, levels=levels)
    if by == "model_version":
        keys = ["model_version"]
    elif by == "horizon":
        keys = ["model_version", "segment"]
        frame = frame.assign(segment=frame["segment"].astype(int))
    else:
        keys = ["model_version", "level", "segment"]
    groups = _add_up(frame, keys)
    if by == "horizon":
        for g in groups:
            g["horizon"] = int(g.pop("segment"))
    return {"since": since, "by": by, "groups": groups}


def live_window(engine: Engine, model_version: str, days: int) -> Window:
    """The model's figures over the last ``days`` target days with stored accuracy."""
    end = store.last_scored_day(engine)
    if end is None:
        return window_of(pd.DataFrame())
    start = end - dt.timedelta(days=days - 1)
    return window_of(store.day_sums(engine, start=start, end=end, model_version=model_version))
