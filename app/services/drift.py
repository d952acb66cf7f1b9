"""Drift: compare the champion's live accuracy with its backtest and with seasonal naive; act.

Run after each scoring pass (``salesfc accuracy``, nightly). Every decision is an event
(featurestore.drift_events):

- the champion's live WAPE over the last ``drift_window_days`` (N) target days above its
  backtest WAPE x (1 + ``drift_margin``), or its live bias outside +-``drift_bias_band``: a
  retrain job starts (the promotion gate decides as for any retrain; the job's params say why),
  at most one a day and never beside a running one;
- the champion worse than seasonal naive on each of the last ``fallback_days`` (K) days:
  serving falls back to the better baseline for the SKUs it fails on (all of them past
  ``fallback_all_share``) until a new champion is promoted; while a retrain is under way the
  decision waits for its outcome (``fallback_pending``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from app.jobs import RETRAIN, spawn_worker
from app.services.accuracy import live_window
from featurestore import drift_events, jobs
from featurestore.config import Settings
from featurestore.drift_events import Event
from training.accuracy import Window
from training.fallback import Verdict, failing
from training.registry import Registry

Starter = Callable[[str], object]  # starts the worker of a queued job


@dataclass
class DriftDecision:
    """What one drift check found and did."""

    champion: str | None
    live: Window | None = None
    backtest_wape: float | None = None
    verdict: Verdict | None = None
    events: list[Event] = field(default_factory=list)

    @property
    def retrain_job(self) -> str | None:
        return next((e.job_id for e in self.events if e.kind == "retrain_started"), None)


def _figures(live: Window) -> dict[str, Any]:
    return {
        "days": live.days,
        "rows": live.rows,
        "live_wape": live.wape,
        "live_bias": live.bias,
        "live_coverage": live.coverage,
        "naive_wape": live.naive_wape,
    }


def check_drift(
    engine: Engine,
    settings: Settings,
    registry: Registry,
    detail: pd.DataFrame,
    *,
    start: Starter | None = None,
    now: dt.datetime | None = None,
) -> DriftDecision:
    """Decide on retrain and fallback from the stored live accuracy and ``detail`` (per SKU-day
    errors of the last days, from ``score_snapshots``); record every decision as an event."""
    now = now or dt.datetime.now(dt.UTC)
    champion = registry.champion()
    decision = DriftDecision(champion)
    if champion is None:
        return decision

    def record(kind: str, detail: dict[str, Any], job_id: str | None = None) -> None:
        event = drift_events.record(
            engine, kind, model_version=champion, detail=detail, job_id=job_id, at=now
        )
        decision.events.append(event)

    state = drift_events.fallback_state(engine)
    if state is not None and state.kind == "fallback_on" and state.model_version != champion:
        record(
            "fallback_off",
            {"reason": f"a new champion ({champion}) replaced {state.model_version}"},
        )
        state = None
    metrics = registry.get(champion).metrics
    overall = metrics.get("overall") or {}
    backtest = overall.get("wape")
    decision.backtest_wape = float(backtest) if backtest is not None else None
    live = live_window(engine, champion, settings.drift_window_days)
    decision.live = live
    figures = {**_figures(live), "backtest_wape": decision.backtest_wape}
    if live.days < settings.drift_window_days or live.wape is None:
        record(
            "insufficient_data",
            {**figures, "reason": f"{live.days} of {settings.drift_window_days} days scored"},
        )
    else:
        _retrain_check(engine, settings, decision, figures, record, start, now)

    mine = detail[detail["model_version"] == champion] if not detail.empty else detail
    verdict = failing(mine, settings.fallback_days, settings.fallback_all_share)
    decision.verdict = verdict
    on = state is not None and state.kind == "fallback_on"
    if verdict.fails and not on:
        body = {
            "skus": "all" if verdict.skus is None else verdict.skus,
            "baseline": verdict.baseline,
            "days": verdict.days,
            "champion_abs_error": verdict.champion_error,
            "naive_abs_error": verdict.naive_error,
            "reason": f"the champion's error was above seasonal naive's on each of the last "
            f"{settings.fallback_days} days",
        }
        running = next(
            (
                j
                for j in jobs.list_jobs(engine, limit=5)
                if j.kind == RETRAIN and j.status in ("queued", "running")
            ),
            None,
        )
        if running is not None:
            record("fallback_pending", {**body, "waiting_for": running.id}, running.id)
        else:
            record("fallback_on", body)
    return decision


def _retrain_check(
    engine: Engine,
    settings: Settings,
    decision: DriftDecision,
    figures: dict[str, Any],
    record: Callable[..., None],
    start: Starter | None,
    now: dt.datetime,
) -> None:
    live = decision.live
    assert live is not None and live.wape is not None
    reasons = []
    backtest = decision.backtest_wape
    if backtest is not None and live.wape > backtest * (1 + settings.drift_margin):
        reasons.append(
            f"live WAPE {live.wape:.3f} over the last {settings.drift_window_days} days is above "
            f"the backtest's {backtest:.3f} by more than {settings.drift_margin:.0%}"
        )
    if live.bias is not None and abs(live.bias) > settings.drift_bias_band:
        reasons.append(f"live bias {live.bias:+.1%} is outside +-{settings.drift_bias_band:.0%}")
    if not reasons:
        record("checked", {**figures, "reason": "live accuracy within its margins"})
        return
    why = "; ".join(reasons)
    midnight = dt.datetime.combine(now.date(), dt.time(), tzinfo=dt.UTC)
    today = drift_events.list_events(engine, since=midnight, kind="retrain_started", limit=1)
    if today:
        record(
            "retrain_skipped",
            {
                **figures,
                "reason": why,
                "skipped": f"a retrain was started today ({today[0].job_id})",
            },
            today[0].job_id,
        )
        return
    try:
        job = jobs.create_job(engine, RETRAIN, {"reason": f"drift: {why}"})
    except jobs.JobConflict as exc:
        record(
            "retrain_skipped",
            {**figures, "reason": why, "skipped": f"a retrain is running ({exc.active.id})"},
            exc.active.id,
        )
        return
    (start or (lambda job_id: spawn_worker(job_id, settings)))(job.id)
    record("retrain_started", {**figures, "reason": why}, job.id)
