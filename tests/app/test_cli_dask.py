"""`--engine dask --scheduler local` on the command line (train, backtest, tune, forecast-all,
inventory-plan), on SQLite and PostgreSQL, and the compose profile the nightly job uses."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from app.cli import cli
from featurestore.config import Settings
from featurestore.db import get_engine
from featurestore.forecast_runs import latest_run
from training.engine.cluster import worker_url

ROOT = Path(__file__).resolve().parents[2]
DASK = ["--engine", "dask", "--scheduler", "local"]
TRAIN = [
    "--models",
    "seasonal_naive,lgbm_tweedie",
    "--strategy",
    "direct",
    "--horizon",
    "14",
    "--folds",
    "1",
    "--n-estimators",
    "20",
]


def _ok(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_train_and_forecast_all_on_a_local_cluster(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    _ok(runner, ["demo-data", "--skus", "10", "--days", "200", "--seed", "3"])
    version = _ok(runner, ["train", *TRAIN, *DASK]).strip().splitlines()[-1]
    manifest = json.loads((settings.models_dir / version / "manifest.json").read_text())
    assert manifest["sku_count"] == 10 and manifest["strategy"]["lag_floors"] == [14]
    assert _ok(runner, ["models", "list"])  # the registry reads the Dask-trained bundle

    local = tmp_path / "local.csv"
    _ok(runner, ["forecast-all", "--no-store", "--out", str(local)])
    out = tmp_path / "dask.csv"
    _ok(runner, ["forecast-all", "--out", str(out), *DASK])
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(local), rtol=1e-9)
    run = latest_run(get_engine())
    assert run is not None and run.model_version == version

    # inventory-plan takes the same options (its plan against local: tests/training).
    assert "--scheduler" in _ok(runner, ["inventory-plan", "--help"])


def test_tune_on_a_local_cluster_scores_as_locally(settings: Settings) -> None:
    runner = CliRunner()
    _ok(runner, ["demo-data", "--skus", "8", "--days", "150", "--seed", "5"])
    tune = ["tune", "--trials", "2", *TRAIN]
    trials, outputs = [], []
    for extra in ([], DASK):
        outputs.append(_ok(runner, [*tune, *extra]))
        version = outputs[-1].strip().splitlines()[-1]
        manifest = json.loads((settings.models_dir / version / "manifest.json").read_text())
        trials.append(manifest["metrics"]["tuning"]["trials"])
    assert "on the Dask workers" in outputs[1] and "on the Dask workers" not in outputs[0]
    local, dask = trials
    assert [t["params"] for t in dask] == [t["params"] for t in local]  # the same draws
    # Each worker bins its own rows (tests/training/test_dask_engine.py): close, not equal.
    assert [t["score"] for t in dask] == pytest.approx([t["score"] for t in local], rel=0.1)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--engine", "dask"], "needs a scheduler"),
        (["backtest", "--engine", "spark"], "choose local or dask"),
    ],
)
def test_engine_choices_are_checked_with_clear_errors(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    monkeypatch.delenv("SALESFC_DASK_SCHEDULER", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert needle in " ".join(result.output.split()), result.output


def test_a_sqlite_store_stays_on_one_machine(settings: Settings) -> None:
    remote = ["--engine", "dask", "--scheduler", "tcp://10.0.0.1:8786"]
    if not settings.is_sqlite:
        # PostgreSQL is reached by every worker at the URL the client uses.
        assert worker_url(settings.database_url, "tcp://10.0.0.1:8786") == settings.database_url
        return
    runner = CliRunner()
    _ok(runner, ["demo-data", "--skus", "4", "--days", "60", "--seed", "1"])
    result = runner.invoke(cli, ["forecast-all", *remote])
    assert result.exit_code != 0
    assert "SQLite feature store is a file on this machine" in " ".join(result.output.split())
    # With a LocalCluster the workers get the file's absolute path.
    url = worker_url("sqlite:///./data/x.db", "local")
    assert url == f"sqlite:///{Path('data/x.db').resolve()}"


def test_compose_dask_profile_serves_the_nightly_job() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    scheduler, worker = services["dask-scheduler"], services["dask-worker"]
    assert scheduler["profiles"] == worker["profiles"] == ["dask"]
    assert scheduler["command"][:2] == ["dask", "scheduler"] and "8786" in scheduler["command"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert worker["deploy"]["replicas"] == 2
    env = services["nightly"]["environment"]
    assert env["SALESFC_DASK_SCHEDULER"] == "tcp://dask-scheduler:8786"
    assert env["SALESFC_ENGINE"] == "${SALESFC_ENGINE:-local}"
    # The nightly job's forecast-all reads the engine from SALESFC_ENGINE.
    result = CliRunner().invoke(cli, ["forecast-all", "--help"])
    assert "SALESFC_ENGINE" in result.output
