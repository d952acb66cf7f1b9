"""Live accuracy: a stored run scored against its actuals equals a hand computation, is stored,
answers GET /v1/accuracy, and late orders change it."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.main import create_app
from app.services.accuracy import accuracy_report, score_snapshots
from featurestore.config import Settings
from featurestore.forecast_runs import save_run
from featurestore.ingest import ingest_frames, push_lines

LAST = dt.date.today() - dt.timedelta(days=10)
DAYS = [LAST - dt.timedelta(days=16 - i) for i in range(17)]  # 17 days, the last is LAST
AS_OF = DAYS[13]  # the run forecasts DAYS[14], DAYS[15], DAYS[16]
UNITS = {
    "A": [0, 2, 3, 1, 4, 2, 5, 3, 2, 4, 1, 6, 3, 2, 4, 5, 1],
    "B": [1, 0, 0, 2, 1, 0, 3, 1, 0, 2, 0, 1, 2, 0, 1, 0, 3],
}
MEANS = {"A": [3.0, 3.0, 3.0], "B": [1.0, 1.0, 1.0]}
P10 = {"A": [1.0, 1.0, 1.0], "B": [0.0, 0.0, 0.0]}
P90 = {"A": [5.0, 4.0, 5.0], "B": [2.0, 2.0, 2.0]}


def load(engine: Engine) -> str:
    products = pd.DataFrame(
        {"sku": ["A", "B"], "category": ["FOOD", "TOYS"], "store": ["S1", "S1"]}
    )
    ingest_frames(engine, "products", [products], source="test:products")
    lines = [
        {
            "order_id": f"{sku}-{i}",
            "line": 1,
            "sku": sku,
            "ordered_at": f"{day}T12:00:00Z",
            "quantity": float(units),
            "unit_price": 1.0,
        }
        for sku, series in UNITS.items()
        for i, (day, units) in enumerate(zip(DAYS, series, strict=True))
    ]
    ingest_frames(engine, "orders", [pd.DataFrame(lines)], source="test:orders")
    rows = [
        {
            "sku": sku,
            "date": DAYS[14 + h],
            "mean": MEANS[sku][h],
            "p10": P10[sku][h],
            "p50": MEANS[sku][h],
            "p90": P90[sku][h],
        }
        for sku in ("A", "B")
        for h in range(3)
    ]
    return save_run(
        engine,
        pd.DataFrame(rows),
        model_version="v-test",
        as_of=AS_OF,
        data_token="test",
        horizon=3,
        quantiles=[0.1, 0.5, 0.9],
        quantile_columns=["p10", "p50", "p90"],
    )


def hand(skus: list[str], horizons: list[int]) -> dict[str, float]:
    """The metrics written out the long way, for these SKUs and horizon days (1-3)."""
    y, f, n, lo, hi, sq = [], [], [], [], [], {}
    for sku in skus:
        series = UNITS[sku]
        past = series[:14]
        # M5 scale: mean squared one-step difference from the first sale on, up to as_of
        start = next(i for i, v in enumerate(past) if v > 0)
        diffs = [(past[i] - past[i - 1]) ** 2 for i in range(start + 1, 14)]
        scale = sum(diffs) / len(diffs)
        errs = []
        for h in horizons:
            actual = series[13 + h]
            y.append(actual)
            f.append(MEANS[sku][h - 1])
            n.append(past[13 + h - 7])  # seasonal naive: the same weekday a week before
            lo.append(P10[sku][h - 1])
            hi.append(P90[sku][h - 1])
            errs.append((MEANS[sku][h - 1] - actual) ** 2)
        sq[sku] = math.sqrt(sum(errs) / len(errs) / scale)
    total = sum(y)
    return {
        "wape": sum(abs(a - b) for a, b in zip(f, y, strict=True)) / total,
        "bias": (sum(f) - total) / total,
        "mae": sum(abs(a - b) for a, b in zip(f, y, strict=True)) / len(y),
        "coverage": sum(a <= v <= b for v, a, b in zip(y, lo, hi, strict=True)) / len(y),
        "naive_wape": sum(abs(a - b) for a, b in zip(n, y, strict=True)) / total,
        "rmsse": sum(sq.values()) / len(sq),
        "actual_units": float(total),
    }


def stored(engine: Engine, run_id: str) -> dict[tuple[str, str], dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM accuracy_scores WHERE run_id = :r"), {"r": run_id}
        ).mappings()
        return {(r["level"], r["segment"]): dict(r) for r in rows}


def test_a_run_scores_as_computed_by_hand(engine: Engine) -> None:
    run_id = load(engine)
    summary = score_snapshots(engine)
    assert (summary.runs, summary.rows, summary.last_day) == (1, 6, LAST)
    scores = stored(engine, run_id)
    for key, (skus, horizons) in {
        ("overall", ""): (["A", "B"], [1, 2, 3]),
        ("horizon", "2"): (["A", "B"], [2]),
        ("category", "FOOD"): (["A"], [1, 2, 3]),
        ("store", "S1"): (["A", "B"], [1, 2, 3]),
    }.items():
        expected = hand(skus, horizons)
        got = scores[key]
        for name, value in expected.items():
            assert got[name] == pytest.approx(value), (key, name)
    assert {k for k in scores if k[0] == "demand_class"}  # every SKU has a class
    assert sum(s["rows"] for k, s in scores.items() if k[0] == "horizon") == 6
    # Scoring again without new data leaves the same figures (replaced, not added).
    score_snapshots(engine)
    assert stored(engine, run_id) == {
        k: {**v, "scored_at": stored(engine, run_id)[k]["scored_at"]} for k, v in scores.items()
    }
    report = accuracy_report(engine, since=None, by="model_version")
    (group,) = report["groups"]
    assert group["wape"] == pytest.approx(hand(["A", "B"], [1, 2, 3])["wape"])
    assert group["wape_vs_naive"] == pytest.approx(
        1 - group["wape"] / hand(["A", "B"], [1, 2, 3])["naive_wape"]
    )


def test_late_orders_change_the_stored_accuracy(engine: Engine) -> None:
    run_id = load(engine)
    score_snapshots(engine)
    before = stored(engine, run_id)[("overall", "")]
    # A late order for A on the run's second day: 4 more units on that day.
    late = {
        "order_id": "LATE-1",
        "line": 1,
        "sku": "A",
        "ordered_at": f"{DAYS[15]}T20:00:00Z",
        "quantity": 4,
        "unit_price": 1.0,
    }
    assert push_lines(engine, "orders", [late]).inserted == 1
    UNITS["A"][15] += 4
    try:
        expected = hand(["A", "B"], [1, 2, 3])
    finally:
        UNITS["A"][15] -= 4
    score_snapshots(engine)
    after = stored(engine, run_id)[("overall", "")]
    assert after["actual_units"] == before["actual_units"] + 4
    assert after["wape"] == pytest.approx(expected["wape"])
    assert after["wape"] != pytest.approx(before["wape"])


def test_the_accuracy_api(engine: Engine, settings: Settings) -> None:
    load(engine)
    score_snapshots(engine)
    with TestClient(create_app(settings)) as client:
        by_horizon = client.get("/v1/accuracy", params={"by": "horizon"}).json()
        assert [g["horizon"] for g in by_horizon["groups"]] == [1, 2, 3]
        assert by_horizon["groups"][1]["wape"] == pytest.approx(hand(["A", "B"], [2])["wape"])
        segments = client.get("/v1/accuracy", params={"by": "segment"}).json()["groups"]
        assert {(g["level"], g["segment"]) for g in segments} >= {
            ("category", "FOOD"),
            ("category", "TOYS"),
            ("store", "S1"),
        }
        later = client.get("/v1/accuracy", params={"since": str(AS_OF + dt.timedelta(days=1))})
        assert later.json()["groups"] == []
        assert client.get("/v1/accuracy", params={"by": "sku"}).status_code == 422


def test_the_accuracy_and_events_commands(engine: Engine, settings: Settings) -> None:
    """`salesfc accuracy` scores the stored run and prints it; `salesfc events` lists drift
    decisions (none without a champion to judge)."""
    from typer.testing import CliRunner

    from app.cli import cli
    from featurestore import drift_events

    run_id = load(engine)
    runner = CliRunner()
    scored = runner.invoke(cli, ["accuracy", "--since", str(AS_OF)])
    assert scored.exit_code == 0, scored.output
    assert "1 run(s) scored (6 SKU-days" in scored.output
    assert stored(engine, run_id)[("overall", "")]["rows"] == 6
    assert runner.invoke(cli, ["accuracy", "--since", "yesterday"]).exit_code == 2
    empty = runner.invoke(cli, ["events"])
    assert empty.exit_code == 0 and "no drift events yet" in empty.output
    drift_events.record(engine, "checked", model_version="v-test", detail={"reason": "fine"})
    listed = runner.invoke(cli, ["events", "--json"])
    assert listed.exit_code == 0 and '"kind": "checked"' in listed.output
