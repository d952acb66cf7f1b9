"""Where a long command is: a progress row per phase with counts and an ETA on a terminal, one
log line per phase with its duration otherwise (cron, CI, a pipe), and libraries kept quiet."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

# The backtest announces each fold x model fit with this prefix (training.backtest.run_backtest).
_FOLD = re.compile(r"^fold \d+/\d+")
_CUTOFF = re.compile(r" \(cut-off [^)]*\)")
# The refit and cold-start stages that follow the backtest in training.pipeline.train.
_REFIT, _COLD_START = "champion ", "cold-start model"

_library_log = logging.getLogger("salesfc.libraries")


def quiet_library_warnings(debug: bool = False) -> None:
    """Send Python warnings (scikit-learn, LightGBM, pandas) to the log instead of the terminal.

    They describe the libraries, not the user's data, and used to interleave with the output
    scripts read; with --debug they are shown on stderr.
    """
    logging.captureWarnings(True)
    target = logging.getLogger("py.warnings")
    target.handlers.clear()
    target.propagate = False
    if debug:
        target.addHandler(logging.StreamHandler())
    else:
        target.addHandler(logging.NullHandler())
    import lightgbm

    # LightGBM writes its own "[LightGBM] [Warning]" lines with print() unless given a logger.
    _library_log.handlers.clear()
    _library_log.propagate = False
    _library_log.addHandler(logging.StreamHandler() if debug else logging.NullHandler())
    lightgbm.register_logger(_library_log)


class Phases:
    """One command's phases: rich rows with counts and ETA on a terminal, log lines elsewhere."""

    def __init__(self, command: str, console: Console, *, interactive: bool | None = None) -> None:
        self.command = command
        self.console = console
        self.interactive = console.is_terminal if interactive is None else interactive
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._name = ""
        self._started = 0.0

    def __enter__(self) -> Phases:
        if self.interactive:
            # The description takes what is left and is cut, never the counts and times.
            text = Column(ratio=1, no_wrap=True, overflow="ellipsis")
            self._progress = Progress(
                SpinnerColumn(finished_text="[green]✓[/green]"),
                TextColumn("[bold]{task.description}", table_column=text),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                expand=True,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end(failed=kind is not None)
        if self._progress is not None:
            self._progress.stop()

    def start(self, name: str, total: float | None = None) -> None:
        """End the current phase and begin the next (``total`` units, or None when unknown)."""
        self._end()
        self._name, self._started = name, time.perf_counter()
        if self._progress is not None:
            self._task = self._progress.add_task(name, total=total)

    def advance(self, units: float = 1) -> None:
        """Count units of the current phase as done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, units)

    def describe(self, detail: str) -> None:
        """Say what the current phase is doing now (terminal only)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=detail)

    def note(self, message: str, seconds: float) -> None:
        """A line about a step inside a phase, when there is no terminal to show it."""
        if not self.interactive:
            self._line(message, seconds)

    def _end(self, failed: bool = False) -> None:
        if not self._name:
            return
        seconds = time.perf_counter() - self._started
        if self._progress is not None and self._task is not None:
            task = self._progress.tasks[self._task]
            total = task.total if task.total is not None else max(task.completed, 1)
            self._progress.update(
                self._task,
                description=f"{self._name}{' (failed)' if failed else ''}",
                total=total,
                completed=task.completed if failed else total,
            )
            self._progress.stop_task(self._task)
        else:
            self._line(f"{self._name}{' failed after' if failed else ''}", seconds)
        self._name, self._task = "", None

    def _line(self, what: str, seconds: float) -> None:
        stamp = datetime.now().astimezone().strftime("%H:%M:%S")
        self.console.print(
            f"{stamp} {self.command}: {what} {seconds:.1f} s", highlight=False, soft_wrap=True
        )


class TrainingSteps:
    """The ProgressFn of `train` and `backtest`: messages from the training functions to phases.

    The backtest fits every candidate on every fold (``units`` of them) and says so with a
    "fold i/n" message per fit; `train` then refits the champion and fits the cold-start model.
    Other messages describe the step at hand.
    """

    def __init__(self, phases: Phases, units: int) -> None:
        self.phases = phases
        self.units = units
        self._unit = ""
        self._unit_started = 0.0
        self._in_backtest = False

    def __call__(self, message: str) -> None:
        if _FOLD.match(message):
            if not self._in_backtest:
                self.phases.start(f"backtest ({self.units} fits)", total=self.units)
                self._in_backtest = True
            else:
                self._unit_done()
            self._unit, self._unit_started = message, time.perf_counter()
            # The model is what a narrow terminal should keep: the fold's date goes first.
            self.phases.describe(_CUTOFF.sub("", message))
        elif message.startswith(_REFIT) or message == _COLD_START:
            self._unit_done()
            self._in_backtest = False
            self.phases.start(message.replace(": refitting on all data", ": refit on all data"))
        else:
            self.phases.describe(message)

    def finish(self) -> None:
        """Count the last fit once the training function has returned."""
        self._unit_done()

    def _unit_done(self) -> None:
        if self._unit:
            self.phases.advance()
            self.phases.note(self._unit, time.perf_counter() - self._unit_started)
            self._unit = ""


@contextmanager
def phases(command: str, console: Console) -> Iterator[Phases]:
    """Show the phases of ``command`` on ``console`` (stderr) while the block runs."""
    with Phases(command, console) as tracker:
        yield tracker
