"""`salesfc tune` end to end on SQLite and PostgreSQL: trials shown, best parameters in the
bundle manifest."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import cli
from featurestore.config import Settings


def test_tune_writes_the_chosen_parameters_into_the_manifest(settings: Settings) -> None:
    runner = CliRunner()
    demo = runner.invoke(cli, ["demo-data", "--skus", "6", "--days", "150", "--seed", "3"])
    assert demo.exit_code == 0, demo.output
    args = [
        "tune",
        "--trials",
        "2",
        "--max-minutes",
        "30",
        "--models",
        "seasonal_naive,lgbm_tweedie",
    ]
    args += ["--strategy", "direct", "--horizon", "14", "--folds", "1", "--n-estimators", "10"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "trial 2/2" in result.output
    version = result.output.strip().splitlines()[-1]
    manifest = json.loads((settings.models_dir / version / "manifest.json").read_text())
    tuning = manifest["metrics"]["tuning"]
    assert len(tuning["trials"]) == 2 and tuning["trials"][0]["params"] == {}
    chosen = manifest["params"]["model_params"]
    best = tuning["best_params"]
    assert all(chosen[k] == v for k, v in best.items())
    assert chosen["n_estimators"] == 10


def test_tune_refuses_candidates_without_lightgbm(settings: Settings) -> None:
    runner = CliRunner()
    runner.invoke(cli, ["demo-data", "--skus", "4", "--days", "120"])
    result = runner.invoke(cli, ["tune", "--models", "seasonal_naive,tsb", "--trials", "1"])
    assert result.exit_code != 0 and "lgbm" in result.output


def test_tune_takes_the_lag_floors_to_the_bundle(settings: Settings) -> None:
    runner = CliRunner()
    demo = runner.invoke(cli, ["demo-data", "--skus", "6", "--days", "150", "--seed", "3"])
    assert demo.exit_code == 0, demo.output
    args = ["tune", "--trials", "1", "--models", "seasonal_naive,lgbm_tweedie", "--horizon", "14"]
    args += ["--folds", "1", "--n-estimators", "10", "--lag-floors", "1,14"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    version = result.output.strip().splitlines()[-1]
    manifest = json.loads((settings.models_dir / version / "manifest.json").read_text())
    assert manifest["strategy"]["lag_floors"] == [1, 14]
    bad = runner.invoke(cli, ["tune", "--trials", "1", "--lag-floors", "14,7"])
    assert bad.exit_code != 0 and "increasing" in bad.output
