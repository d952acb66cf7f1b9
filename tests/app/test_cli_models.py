"""`salesfc models ...` through typer's CliRunner on a private models directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.cli.models import metrics_summary
from featurestore.config import get_settings
from training.bundle import save_bundle

runner = CliRunner()


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "models"
    monkeypatch.setenv("SALESFC_MODELS_DIR", str(path))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def make(models: Path, version: str, rmsse: float) -> str:
    fields = {
        "data_start": "2015-01-01",
        "data_end": "2016-04-24",
        "cutoff": "2016-03-27",
        "sku_count": 1234,
        "features": ["lag_28"],
        "metrics": {"wape": 0.4, "rmsse": rmsse, "folds": [1, 2]},
        "git_sha": None,
    }
    return save_bundle(models, {"calibration": {"scale": 1.0}}, fields, version=version).name


def test_list_empty(models: Path) -> None:
    result = runner.invoke(cli, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    result = runner.invoke(cli, ["models", "list"])
    assert result.exit_code == 0 and "no champion yet" in result.stdout


def test_promote_list_show_rollback(models: Path) -> None:
    a = make(models, "20260101T000000Z-aaaa", 0.91)
    b = make(models, "20260102T000000Z-bbbb", 0.83)

    result = runner.invoke(cli, ["models", "promote", a, "--reason", "first"])
    assert result.exit_code == 0, result.output
    assert a in result.stdout
    result = runner.invoke(cli, ["models", "promote", b])
    assert result.exit_code == 0, result.output

    rows = json.loads(runner.invoke(cli, ["models", "list", "--json"]).stdout)
    assert [(r["version"], r["champion"]) for r in rows] == [(b, True), (a, False)]
    assert rows[0]["metrics"]["rmsse"] == 0.83

    table = runner.invoke(cli, ["models", "list"]).stdout
    champion_line = next(line for line in table.splitlines() if b in line)
    other_line = next(line for line in table.splitlines() if a in line)
    assert "*" in champion_line and "*" not in other_line
    assert "rmsse=0.83" in champion_line and "1,234" in champion_line

    shown = runner.invoke(cli, ["models", "show", a])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["version"] == a
    assert json.loads(runner.invoke(cli, ["models", "show", "champion"]).stdout)["version"] == b

    result = runner.invoke(cli, ["models", "rollback", "--reason", "bias"])
    assert result.exit_code == 0, result.output
    assert json.loads(runner.invoke(cli, ["models", "show", "champion"]).stdout)["version"] == a
    events = json.loads(runner.invoke(cli, ["models", "history", "--json"]).stdout)
    assert [(e["action"], e["version"], e["reason"]) for e in events] == [
        ("rollback", a, "bias"),
        ("promote", b, ""),
        ("promote", a, "first"),
    ]


def test_errors_exit_nonzero_with_a_message(models: Path) -> None:
    a = make(models, "20260101T000000Z-aaaa", 0.9)
    (models / a / "calibration.joblib").write_bytes(b"tampered")

    result = runner.invoke(cli, ["models", "promote", a])
    assert result.exit_code == 1
    assert "calibration.joblib" in result.stderr and "checksum" in result.stderr

    result = runner.invoke(cli, ["models", "show", "20990101T000000Z-ffff"])
    assert result.exit_code == 1 and "no bundle 20990101T000000Z-ffff" in result.stderr

    result = runner.invoke(cli, ["models", "rollback"])
    assert result.exit_code == 1 and "no previous champion" in result.stderr

    result = runner.invoke(cli, ["models", "show", "champion"])
    assert result.exit_code == 2 and "no champion" in result.stderr


def test_list_reports_broken_bundles(models: Path) -> None:
    make(models, "20260101T000000Z-aaaa", 0.9)
    (models / "20260102T000000Z-bbbb").mkdir()
    result = runner.invoke(cli, ["models", "list", "--json"])
    assert result.exit_code == 0
    assert [r["version"] for r in json.loads(result.stdout)] == ["20260101T000000Z-aaaa"]
    assert "broken bundle 20260102T000000Z-bbbb" in result.stderr


def test_metrics_summary_puts_the_selection_metric_first() -> None:
    metrics = {"wape": 0.41234, "bias": -0.02, "rmsse": 0.8, "folds": [1], "ok": True}
    assert metrics_summary(metrics, "rmsse") == "rmsse=0.8 bias=-0.02 wape=0.4123"
    assert metrics_summary({}, "rmsse") == "-"
