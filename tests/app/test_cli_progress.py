"""Where a long command is: phases with counts and ETA on a terminal, a line per phase with its
duration without one; tables that fit 80 columns by wrapping; --json on commands with a table."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from app.cli import cli
from app.cli.progress import Phases, TrainingSteps
from featurestore.config import Settings, get_settings
from training.bundle import save_bundle

runner = CliRunner()
LINE = re.compile(r"^\d\d:\d\d:\d\d (\S+): (.+) (\d+\.\d) s$")


def phase_lines(stderr: str) -> list[tuple[str, str]]:
    """(command, phase) of every `HH:MM:SS command: phase N.N s` line."""
    return [(m[1], m[2]) for m in map(LINE.match, stderr.splitlines()) if m]


def backtest_messages(folds: int, models: list[str]) -> list[str]:
    """What training.backtest.run_backtest and the forecaster say, in order."""
    out = []
    for fold in range(folds):
        for model in models:
            out += [f"fold {fold + 1}/{folds} (cut-off 2026-01-0{fold + 1}): {model}"]
            out += [f"{model}: fitting 1,000 rows x 12 features"]
    return out


def test_training_steps_without_a_terminal_log_each_fit_and_phase() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120)
    with Phases("train", console) as phases:
        phases.start("reading history")
        steps = TrainingSteps(phases, units=4)
        for message in backtest_messages(2, ["seasonal_naive", "lgbm_tweedie/direct"]):
            steps(message)
        steps("champion lgbm_tweedie/direct: refitting on all data")
        steps("lgbm_tweedie/direct: features for lag floor 7")
        steps("cold-start model")
    lines = phase_lines(buffer.getvalue())
    assert [phase for _, phase in lines] == [
        "reading history",
        "fold 1/2 (cut-off 2026-01-01): seasonal_naive",
        "fold 1/2 (cut-off 2026-01-01): lgbm_tweedie/direct",
        "fold 2/2 (cut-off 2026-01-02): seasonal_naive",
        "fold 2/2 (cut-off 2026-01-02): lgbm_tweedie/direct",
        "backtest (4 fits)",
        "champion lgbm_tweedie/direct: refit on all data",
        "cold-start model",
    ]
    assert {command for command, _ in lines} == {"train"}


def test_training_steps_on_a_terminal_count_fits_and_finish_every_phase() -> None:
    console = Console(file=io.StringIO(), width=100, force_terminal=True)
    with Phases("backtest", console) as phases:
        phases.start("reading history")
        steps = TrainingSteps(phases, units=6)
        for message in backtest_messages(2, ["a", "b", "c"])[:6]:  # three fits begun
            steps(message)
        progress = phases._progress
        assert progress is not None
        fits = progress.tasks[-1]
        assert fits.total == 6 and fits.completed == 2  # the third is running
        for message in backtest_messages(2, ["a", "b", "c"])[6:]:
            steps(message)
        steps.finish()
        assert fits.completed == 6
    assert [t.completed == t.total for t in progress.tasks] == [True, True]
    assert "eta" in console.file.getvalue()  # type: ignore[attr-defined]


def test_ingest_shows_reading_and_writing_phases_and_json(
    settings: Settings, tmp_path: Path
) -> None:
    products = tmp_path / "products.csv"
    products.write_text("sku,name\nA,Apple\nB,Banana\n")
    assert runner.invoke(cli, ["ingest", "products", str(products)]).exit_code == 0
    sales = tmp_path / "sales.csv"
    sales.write_text("sku,date,units\nA,2026-01-01,3\nA,2026-01-02,1\nB,2026-01-01,2\n")
    result = runner.invoke(cli, ["ingest", "sales", str(sales), "--json"])
    assert result.exit_code == 0, result.output
    phases = [phase for _, phase in phase_lines(result.stderr)]
    assert phases == [
        "reading sales.csv",
        "staging 3 rows",
        "checking for duplicate keys",
        "merging 3 rows into sales",
        "committing",
    ]
    (report,) = json.loads(result.stdout)
    assert report["entity"] == "sales" and report["status"] == "loaded"
    assert report["rows_accepted"] == 3 and report["reject_share"] == 0.0


def test_backtest_json_to_stdout_and_phase_lines(settings: Settings) -> None:
    assert runner.invoke(cli, ["demo-data", "--skus", "6", "--days", "90", "--json"]).exit_code == 0
    args = ["backtest", "--models", "seasonal_naive,moving_average", "--folds", "2"]
    result = runner.invoke(cli, [*args, "--horizon", "7", "--json", "-"])
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads(result.stdout)  # nothing but the report on stdout
    singles = {"seasonal_naive", "moving_average"}
    assert singles <= set(doc["models"])  # and the mean of the best ones (--ensemble-top)
    assert all(m.startswith("ensemble(") for m in set(doc["models"]) - singles)
    phases = [phase for _, phase in phase_lines(result.stderr)]
    assert phases[0] == "reading history" and phases[-1] == "backtest (4 fits)"
    assert sum(p.startswith("fold ") for p in phases) == 4


def test_demo_data_json(settings: Settings) -> None:
    result = runner.invoke(cli, ["demo-data", "--skus", "4", "--days", "60", "--json"])
    assert result.exit_code == 0, result.output
    reports = json.loads(result.stdout)
    assert set(reports) == {"products", "events", "prices", "promotions", "sales"}
    assert all(r["status"] == "loaded" for r in reports.values())


@pytest.fixture
def narrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private models directory and an 80-column terminal."""
    path = tmp_path / "models"
    monkeypatch.setenv("SALESFC_MODELS_DIR", str(path))
    monkeypatch.setenv("COLUMNS", "80")
    get_settings.cache_clear()
    return path


def test_models_list_fits_80_columns_with_the_model_type(narrow: Path) -> None:
    fields = {
        "data_start": "2015-01-01",
        "data_end": "2016-04-24",
        "cutoff": "2016-03-27",
        "sku_count": 30490,
        "features": ["lag_28"],
        "metrics": {"rmsse": 0.8123, "wape": 0.41, "champion_model": "lgbm_tweedie/multi"},
        "params": {"model": "lgbm_tweedie"},
        "git_sha": None,
    }
    version = save_bundle(narrow, {"calibration": {"scale": 1.0}}, fields).name
    assert runner.invoke(cli, ["models", "promote", version]).exit_code == 0
    table = runner.invoke(cli, ["models", "list"]).stdout
    assert max(len(line) for line in table.splitlines()) <= 80
    line = next(line for line in table.splitlines() if version in line)
    assert f"* {version}" in line and "lgbm_tweedie/multi" in line
    history = runner.invoke(cli, ["models", "history"]).stdout
    assert max(len(line) for line in history.splitlines()) <= 80 and version in history
