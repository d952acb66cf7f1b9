"""`salesfc nightly`: the exports are loaded, the catalogue forecast, failures retried with
exponential backoff, and the schedule never waits a day after a failure."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.cli import nightly as nightly_cli
from app.cli.nightly import (
    LOAD_ORDER,
    TIMED_OUT,
    Nightly,
    backoff_delay,
    cycle_steps,
    export_files,
    run_salesfc,
    seconds_until,
)
from featurestore.config import Settings
from featurestore.db import get_engine
from featurestore.forecast_runs import latest_run
from featurestore.stats import store_stats
from training.synth import SynthConfig, generate

DAY = 86_400.0


class Stop(Exception):
    """Ends Nightly.forever in a test."""


class Clock:
    """A fake UTC clock that sleeping advances; stops the loop after ``limit`` sleeps."""

    def __init__(self, start: dt.datetime, limit: int) -> None:
        self.current = start
        self.sleeps: list[float] = []
        self.limit = limit

    def now(self) -> dt.datetime:
        return self.current

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.current += dt.timedelta(seconds=seconds)
        if len(self.sleeps) >= self.limit:
            raise Stop


class Steps:
    """A fake runner: records each step, fails the forecast-all of the listed cycles."""

    def __init__(self, failing_cycles: set[int] | None = None, fail_all: bool = False) -> None:
        self.calls: list[str] = []
        self.cycles = 0
        self.failing = failing_cycles or set()
        self.fail_all = fail_all

    def __call__(self, args: Sequence[str]) -> int:
        self.calls.append(" ".join(args))
        if args[0] == "ingest":
            return 0
        self.cycles += 1
        return 1 if self.fail_all or self.cycles in self.failing else 0


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, 60, 1800) for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1800, 1800, 1800]


def test_seconds_until_the_next_daily_start() -> None:
    at = dt.time(2, 0)
    assert seconds_until(at, dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.UTC)) == 3600
    assert seconds_until(at, dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)) == DAY
    assert seconds_until(at, dt.datetime(2026, 3, 1, 2, 30, tzinfo=dt.UTC)) == DAY - 1800


def test_export_files_in_load_order(tmp_path: Path) -> None:
    for name in ("sales.csv", "products.parquet", "events.csv", "notes.txt", "README.md"):
        (tmp_path / name).write_text("x")
    (tmp_path / "prices.csv").mkdir()
    assert export_files(tmp_path) == [
        ("products", tmp_path / "products.parquet"),
        ("sales", tmp_path / "sales.csv"),
        ("events", tmp_path / "events.csv"),
    ]
    assert LOAD_ORDER[:2] == ("m5", "products")
    assert cycle_steps(None) == [["forecast-all"], ["accuracy"]]
    assert cycle_steps(tmp_path)[-2:] == [["forecast-all"], ["accuracy"]]
    assert len(cycle_steps(tmp_path)) == 5


def test_a_failed_cycle_is_retried_with_backoff_then_waits_for_the_schedule() -> None:
    # Starts at 01:00; the first cycle fails three times, then succeeds.
    clock = Clock(dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.UTC), limit=5)
    steps = Steps(failing_cycles={1, 2, 3})
    schedule = Nightly(
        steps=lambda: [["ingest", "sales", "/x/sales.csv"], ["forecast-all"]],
        run=steps,
        sleep=clock.sleep,
        now=clock.now,
    )
    with pytest.raises(Stop):
        schedule.forever()
    # 60 + 120 + 240 s of retries, then until 02:00, then a day until the next 02:00.
    assert clock.sleeps == [60, 120, 240, 3600 - 420, DAY]
    assert steps.calls.count("forecast-all") == 5
    assert steps.calls.count("ingest sales /x/sales.csv") == 5


def test_a_lasting_failure_never_waits_a_day() -> None:
    clock = Clock(dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC), limit=40)
    schedule = Nightly(
        steps=lambda: [["forecast-all"]],
        run=Steps(fail_all=True),
        sleep=clock.sleep,
        now=clock.now,
        max_delay=1800,
    )
    with pytest.raises(Stop):
        schedule.forever()
    assert max(clock.sleeps) == 1800
    assert clock.sleeps[:3] == [60, 120, 240]


def test_a_failed_night_after_good_ones_is_retried_within_minutes() -> None:
    clock = Clock(dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC), limit=4)
    schedule = Nightly(
        steps=lambda: [["forecast-all"]], run=Steps({2}), sleep=clock.sleep, now=clock.now
    )
    with pytest.raises(Stop):
        schedule.forever()
    # start-up cycle ok -> a day; the next night fails -> 60 s, then ok -> until 02:00.
    assert clock.sleeps == [DAY, 60, DAY - 60, DAY]


def test_a_failing_step_stops_the_cycle_and_once_gives_up_after_attempts() -> None:
    calls: list[str] = []

    def run(args: Sequence[str]) -> int:
        calls.append(args[0])
        return 2 if args[0] == "ingest" else 0

    sleeps: list[float] = []
    schedule = Nightly(
        steps=lambda: [["ingest", "sales", "bad.csv"], ["forecast-all"]],
        run=run,
        sleep=sleeps.append,
    )
    assert schedule.until_done(attempts=3) is False
    assert calls == ["ingest"] * 3  # forecasts wait for the data
    assert sleeps == [60, 120]


def test_once_exits_nonzero_after_its_attempts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[list[str]] = []

    def fake_runner(timeout: float) -> nightly_cli.Runner:
        def run(args: Sequence[str]) -> int:
            seen.append(list(args))
            return 1

        return run

    monkeypatch.setattr(nightly_cli, "run_salesfc", fake_runner)
    runner = CliRunner()
    failed = runner.invoke(cli, ["nightly", "--once", "--attempts", "2", "--backoff", "0"])
    assert failed.exit_code == 1, failed.output
    assert seen == [["forecast-all"], ["forecast-all"]]
    missing = runner.invoke(cli, ["nightly", "--once", "--exports", str(tmp_path / "nope")])
    bad_time = runner.invoke(cli, ["nightly", "--once", "--at", "25:00"])
    assert missing.exit_code == 2 and bad_time.exit_code == 2
    assert len(seen) == 2  # neither ran a step


def test_run_salesfc_reports_exit_codes_and_kills_a_step_past_its_timeout() -> None:
    assert (sys.executable, "-m", "app.cli") == nightly_cli.SALESFC
    exits = (sys.executable, "-c", "import sys; sys.exit(int(sys.argv[1]))")
    assert run_salesfc(timeout=60, command=exits)(["0"]) == 0
    assert run_salesfc(timeout=60, command=exits)(["3"]) == 3
    hangs = (sys.executable, "-c", "import time; time.sleep(60)")
    started = time.perf_counter()
    assert run_salesfc(timeout=0.5, command=hangs)([]) == TIMED_OUT
    assert time.perf_counter() - started < 30  # killed, not waited for


def test_nightly_cycle_loads_exports_and_stores_a_run(settings: Settings, tmp_path: Path) -> None:
    """On the real store: exports load, forecast-all fails without a champion and is retried."""
    catalogue = generate(SynthConfig(n_skus=6, n_days=120, seed=5))
    exports = tmp_path / "exports"
    exports.mkdir()
    catalogue.products.to_parquet(exports / "products.parquet", index=False)
    catalogue.sales.to_csv(exports / "sales.csv", index=False)
    runner = CliRunner()

    def in_process(args: Sequence[str]) -> int:
        return runner.invoke(cli, list(args)).exit_code

    sleeps: list[float] = []
    schedule = Nightly(steps=lambda: cycle_steps(exports), run=in_process, sleep=sleeps.append)
    assert schedule.until_done(attempts=2) is False  # no champion yet
    assert sleeps == [60]
    engine = get_engine()
    assert store_stats(engine)["skus"] == 6
    assert latest_run(engine) is None

    trained = runner.invoke(
        cli,
        ["train", "--models", "seasonal_naive", "--horizon", "7", "--folds", "1"],
    )
    assert trained.exit_code == 0, trained.output
    assert schedule.until_done(attempts=1) is True
    run = latest_run(engine)
    assert run is not None
    assert store_stats(engine)["skus"] == 6  # loading the same exports again changed nothing
