"""Simulated drift: the actuals jump by 50% after a date. One retrain starts (at most one a day);
when the challenger loses, the service falls back to seasonal naive, flags it, and says so in
/readyz and /metrics, until a new champion is promoted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.jobs import RETRAIN
from app.main import create_app
from app.services.accuracy import score_snapshots
from app.services.batch import run_forecast_all
from app.services.drift import check_drift
from featurestore import drift_events, jobs
from featurestore.config import Settings
from featurestore.ingest import ingest_frames
from training.options import TrainOptions
from training.pipeline import train
from training.registry import Registry

N_DAYS = 120
SHIFT = 16  # the last days of actuals, at +50%
WEEK = np.array([10.0, 12.0, 9.0, 14.0, 20.0, 26.0, 16.0])
LAST = dt.date.today() - dt.timedelta(days=3)
FIRST = LAST - dt.timedelta(days=N_DAYS - 1)
SHIFT_FROM = LAST - dt.timedelta(days=SHIFT - 1)
SKUS = ["D1", "D2", "D3"]


def catalogue(engine: Engine) -> None:
    """Three SKUs with an exact weekly profile (no noise); from SHIFT_FROM on, 50% more."""
    ingest_frames(
        engine,
        "products",
        [pd.DataFrame({"sku": SKUS, "category": "FOOD", "store": ["S1", "S1", "S2"]})],
        source="test:products",
    )
    days = pd.date_range(FIRST, LAST, freq="D")
    rows = []
    for k, sku in enumerate(SKUS):
        units = WEEK[(days.day_of_week.to_numpy() + k) % 7] * (1 + k / 2)
        units = np.where(days.date >= SHIFT_FROM, units * 1.5, units)
        rows.append(pd.DataFrame({"sku": sku, "date": days.date, "units": units}))
    ingest_frames(engine, "sales", [pd.concat(rows)], source="test:sales")


@pytest.fixture
def drifted(engine: Engine, settings: Settings, tmp_path: Path) -> Registry:
    catalogue(engine)
    # A 28-day moving average trained on the days before the jump: exact enough before it.
    options = TrainOptions(
        models=["moving_average"],
        horizon=7,
        folds=1,
        cutoff=SHIFT_FROM - dt.timedelta(days=1),
        cold_start_share=0.2,
    )
    registry = Registry(settings.models_dir)
    outcome = train(engine, Path(settings.models_dir), options)
    registry.promote(outcome.version, reason="test")
    return registry


def nightly_runs(engine: Engine, registry: Registry, first: dt.date, last: dt.date) -> None:
    """A nightly snapshot for each day, each from what was known that day."""
    day = first
    while day <= last:
        run_forecast_all(engine, registry, as_of=day)
        day += dt.timedelta(days=1)


def test_drift_starts_one_retrain_then_falls_back_when_the_challenger_loses(
    engine: Engine, settings: Settings, drifted: Registry
) -> None:
    champion = drifted.champion()
    started: list[str] = []
    # Before the jump: live accuracy within its margins, one "checked" event, no job.
    before = SHIFT_FROM - dt.timedelta(days=1)
    nightly_runs(engine, drifted, before - dt.timedelta(days=21), before - dt.timedelta(days=7))
    calm = check_drift(engine, settings, drifted, score_snapshots(engine, detail_days=14).detail)
    assert [e.kind for e in calm.events] == ["checked"], calm.events
    assert jobs.list_jobs(engine) == []

    # After it: the snapshots of the last 20 days are scored against +50% actuals.
    nightly_runs(engine, drifted, LAST - dt.timedelta(days=20), LAST - dt.timedelta(days=1))
    summary = score_snapshots(engine, detail_days=14)
    assert summary.runs == 35

    first = check_drift(engine, settings, drifted, summary.detail, start=started.append)
    kinds = [e.kind for e in first.events]
    assert kinds == ["retrain_started", "fallback_pending"], first.events
    assert first.live is not None and first.live.bias is not None and first.live.bias < -0.15
    (job_id,) = started
    job = jobs.get_job(engine, job_id)
    assert job.kind == RETRAIN and job.params is not None
    assert job.params["reason"].startswith("drift: ")
    assert "bias" in job.params["reason"]

    # The same day again: no second retrain, while the first is still queued.
    again = check_drift(engine, settings, drifted, summary.detail, start=started.append)
    assert [e.kind for e in again.events] == ["retrain_skipped", "fallback_pending"]
    assert started == [job_id]

    # The challenger loses the gate: the job ends, the champion stays.
    jobs.finish_job(
        engine, job_id, ok=True, message="kept", result={"decision": "kept the champion"}
    )
    third = check_drift(engine, settings, drifted, summary.detail, start=started.append)
    assert [e.kind for e in third.events] == ["retrain_skipped", "fallback_on"]
    assert started == [job_id]
    on = third.events[-1]
    assert on.detail["skus"] == "all" and on.detail["baseline"] == "seasonal_naive"
    assert on.model_version == champion

    with TestClient(create_app(settings)) as client:
        body = client.get(f"/v1/forecast/{SKUS[0]}").json()
        (forecast,) = body["forecasts"]
        assert forecast["fallback"] is True
        # Seasonal naive: the same weekday of the last week, which the jump already reached.
        history = pd.date_range(LAST - dt.timedelta(days=6), LAST, freq="D")
        week = dict(
            zip(history.day_of_week, WEEK[history.day_of_week.to_numpy() % 7] * 1.5, strict=True)
        )
        for day in forecast["days"]:
            weekday = dt.date.fromisoformat(day["date"]).weekday()
            assert day["mean"] == pytest.approx(week[weekday])
        ready = client.get("/readyz").json()
        assert ready["fallback"]["skus"] == "all"
        metrics = client.get("/metrics").text
        assert "salesfc_fallback_active 1.0" in metrics
        assert 'salesfc_live_bias{window="7d"}' in metrics
        events = client.get("/v1/events").json()["events"]
        assert [e["kind"] for e in events[:2]] == ["fallback_on", "retrain_skipped"]

    # A new champion wins: the fallback ends with it.
    outcome = train(
        engine,
        Path(settings.models_dir),
        TrainOptions(models=["seasonal_naive"], horizon=7, folds=1, cold_start_share=0.2),
    )
    drifted.promote(outcome.version, reason="test: a new champion")
    fourth = check_drift(engine, settings, drifted, summary.detail, start=started.append)
    assert fourth.events[0].kind == "fallback_off"
    assert drift_events.fallback_state(engine) == fourth.events[0]
    with TestClient(create_app(settings)) as client:
        (forecast,) = client.get(f"/v1/forecast/{SKUS[0]}").json()["forecasts"]
        assert forecast["fallback"] is False
        assert client.get("/readyz").json()["fallback"] is None
