"""`salesfc nightly`: the scheduled cycle (load the exports directory, forecast-all), retried.

Each step runs as its own `salesfc` process: a step that crashes, hangs (killed at --timeout) or
leaks memory leaves the scheduler standing, and every attempt starts from a fresh engine and a
fresh champion. A failed cycle is retried with exponential backoff until it succeeds, so an
outage of the database or of the models volume costs hours of staleness at most, never a
skipped day.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import typer

from app.observability import configure_logging
from featurestore.config import get_settings
from featurestore.schema import ENTITIES

# Load order of an exports directory: an M5-layout file carries a whole catalogue, then the
# entities in ENTITIES order (products first: the other files refer to their SKUs).
LOAD_ORDER = ("m5", *ENTITIES)
SUFFIXES = (".parquet", ".csv")
# Exit code reported for a step killed at its timeout (the convention of coreutils' timeout).
TIMED_OUT = 124

Runner = Callable[[Sequence[str]], int]

log = structlog.get_logger("salesfc.nightly")


def export_files(directory: Path) -> list[tuple[str, Path]]:
    """The directory's exports in load order: ``<entity>.parquet`` or ``<entity>.csv``."""
    found = []
    for entity in LOAD_ORDER:
        for suffix in SUFFIXES:
            path = directory / f"{entity}{suffix}"
            if path.is_file():
                found.append((entity, path))
    return found


def cycle_steps(exports: Path | None) -> list[list[str]]:
    """The `salesfc` arguments of one cycle: ingest each export, forecast the catalogue, then
    score every stored run against the new actuals and check for drift.

    Ingesting a file that was loaded before changes nothing, so a directory the shop refreshes
    in place is simply listed again every night (and on every retry); scoring again replaces a
    run's scores with the same figures unless late orders changed its actuals.
    """
    steps = [] if exports is None else [["ingest", e, str(p)] for e, p in export_files(exports)]
    steps.append(["forecast-all"])
    steps.append(["accuracy"])
    return steps


def backoff_delay(failures: int, first: float, cap: float) -> float:
    """Seconds to wait after the n-th consecutive failure: first, 2 x first, ... up to cap."""
    return float(min(cap, first * 2 ** (failures - 1)))


def seconds_until(at: dt.time, now: dt.datetime) -> float:
    """Seconds from ``now`` (UTC) to the next ``at`` o'clock UTC, at most one day."""
    target = dt.datetime.combine(now.date(), at, tzinfo=dt.UTC)
    if target <= now:
        target += dt.timedelta(days=1)
    return (target - now).total_seconds()


SALESFC = (sys.executable, "-m", "app.cli")


def run_salesfc(timeout: float, command: Sequence[str] = SALESFC) -> Runner:
    """A runner that starts `salesfc ARGS` as a child process and returns its exit code."""

    def run(args: Sequence[str]) -> int:
        try:
            return subprocess.run([*command, *args], timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            # subprocess.run has killed the child by now.
            return TIMED_OUT

    return run


@dataclass
class Nightly:
    """The schedule: a cycle at start-up, then one a day at ``at`` (UTC), retried on failure."""

    steps: Callable[[], list[list[str]]]
    run: Runner
    at: dt.time = dt.time(2, 0)
    first_delay: float = 60.0
    max_delay: float = 1800.0
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))

    def cycle(self) -> bool:
        """Run the steps in order; stop at the first that fails (forecasts wait for the data)."""
        steps = self.steps()
        for args in steps:
            started = time.perf_counter()
            code = self.run(args)
            seconds = round(time.perf_counter() - started, 1)
            if code != 0:
                log.error(
                    "nightly step failed",
                    step=" ".join(args),
                    exit_code=code,
                    timed_out=code == TIMED_OUT,
                    seconds=seconds,
                )
                return False
            log.info("nightly step done", step=" ".join(args), seconds=seconds)
        return True

    def until_done(self, attempts: int | None = None) -> bool:
        """Repeat the cycle with exponential backoff until it succeeds (or ``attempts`` end)."""
        failures = 0
        while not self.cycle():
            failures += 1
            if attempts is not None and failures >= attempts:
                log.error("nightly cycle gave up", attempts=failures)
                return False
            delay = backoff_delay(failures, self.first_delay, self.max_delay)
            log.warning("nightly cycle failed: retrying", failures=failures, retry_in_s=delay)
            self.sleep(delay)
        log.info("nightly cycle done", attempts=failures + 1)
        return True

    def forever(self) -> None:
        """Cycle now, then every day at ``at``; a failed cycle is retried, never left a day."""
        while True:
            self.until_done()
            wait = seconds_until(self.at, self.now())
            log.info("next nightly cycle", at=self.at.isoformat("minutes"), in_s=round(wait))
            self.sleep(wait)


def _parse_time(value: str) -> dt.time:
    try:
        parsed = dt.time.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not a time of day (HH:MM)") from exc
    return parsed.replace(second=0, microsecond=0, tzinfo=None)


def nightly(
    at: str = typer.Option("02:00", "--at", help="Daily start, HH:MM UTC"),
    exports: Path | None = typer.Option(
        None,
        "--exports",
        exists=True,
        file_okay=False,
        help="Directory of exports to load first: m5.parquet or <entity>.parquet|.csv",
    ),
    backoff: float = typer.Option(60.0, "--backoff", min=0.0, help="First retry after, seconds"),
    max_backoff: float = typer.Option(
        1800.0, "--max-backoff", min=0.0, help="Longest wait between retries, seconds"
    ),
    timeout: float = typer.Option(
        4 * 3600.0, "--timeout", min=1.0, help="A step running longer is killed, seconds"
    ),
    once: bool = typer.Option(False, "--once", help="One cycle (with retries), then exit"),
    attempts: int = typer.Option(5, "--attempts", min=1, help="With --once: tries before exit 1"),
) -> None:
    """Load the exports and forecast the catalogue now and daily; retry failures with backoff."""
    configure_logging(get_settings().log_level)
    schedule = Nightly(
        steps=lambda: cycle_steps(exports),
        run=run_salesfc(timeout),
        at=_parse_time(at),
        first_delay=backoff,
        max_delay=max_backoff,
    )
    if once:
        if not schedule.until_done(attempts):
            raise typer.Exit(1)
        return
    schedule.forever()
