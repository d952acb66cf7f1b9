"""The CLI contract end to end, on SQLite and PostgreSQL: demo data, train, backtest,
forecast-all, report and the registry commands."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from app.cli import cli
from featurestore.config import Settings
from featurestore.db import get_engine
from featurestore.forecast_runs import latest_run
from featurestore.readers import read_products

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


def test_train_backtest_forecast_report(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    _ok(runner, ["demo-data", "--skus", "12", "--days", "240", "--seed", "3"])
    # The learned model alone: with a baseline beside it, whichever the backtest prefers ships.
    out = _ok(runner, ["train", "--models", "lgbm_tweedie", *TRAIN[2:]])
    version = out.strip().splitlines()[-1]
    manifest = json.loads((settings.models_dir / version / "manifest.json").read_text())
    assert manifest["strategy"]["name"] == "direct"
    assert manifest["strategy"]["lag_floors"] == [14]
    assert "chosen by backtest" in manifest["strategy"]["why"]
    assert manifest["params"]["max_train_days"] == 1095
    assert manifest["params"]["stage_model_params"]["n_estimators"] == 20
    listing = json.loads(_ok(runner, ["models", "list", "--json"]))
    assert any(
        m["version"] == version
        for m in (listing if isinstance(listing, list) else listing["models"])
    )

    bt = tmp_path / "bt.json"
    _ok(
        runner, ["backtest", "--json", str(bt), *TRAIN[:-4], "--folds", "2", "--n-estimators", "20"]
    )
    doc = json.loads(bt.read_text())
    assert len(doc["cutoffs"]) == 2 and doc["horizon"] == 14
    singles = {"seasonal_naive", "lgbm_tweedie/direct"}
    assert singles <= set(doc["models"])  # and the mean of the best three (--ensemble-top)
    assert all(m.startswith("ensemble(") for m in set(doc["models"]) - singles)
    assert doc["champion"] == doc["ranking"][0]
    for name in doc["models"]:
        overall = doc["models"][name]["overall"]
        assert {"mse", "rmse", "mae", "wape", "bias", "rmsse", "mase"} <= set(overall)
    assert "value_added_over_seasonal_naive" in doc["models"]["lgbm_tweedie/direct"]

    fc = tmp_path / "fc.parquet"
    _ok(runner, ["forecast-all", "--out", str(fc)])
    frame = pd.read_parquet(fc)
    assert list(frame.columns[:6]) == ["sku", "date", "mean", "p10", "p50", "p90"]
    products = read_products(get_engine())
    active = products.loc[products["status"] != "discontinued", "sku"]
    assert frame["sku"].nunique() == len(active)
    assert (frame.groupby("sku").size() == 14).all()
    assert (frame["p10"] <= frame["p90"]).all() and (frame["mean"] >= 0).all()
    run = latest_run(get_engine())
    assert run is not None and run.model_version == version and run.rows == len(frame)

    csv_out = tmp_path / "fc.csv"
    _ok(runner, ["forecast-all", "--out", str(csv_out), "--horizon", "7", "--no-store"])
    assert len(pd.read_csv(csv_out)) == len(active) * 7
    assert latest_run(get_engine()).run_id == run.run_id  # --no-store left the stored run alone

    html = tmp_path / "report.html"
    _ok(runner, ["report", "--out", str(html)])
    text = html.read_text()
    assert text.count("data:image/png;base64,") >= 5 and version in text

    # Issue #11: a challenger on another metric met a champion score of None and won.
    args = ["train", "--models", "seasonal_naive", "--horizon", "14", "--folds", "1"]
    out = _ok(runner, [*args, "--metric", "wape"])
    challenger = out.strip().splitlines()[-1]
    promotion = json.loads((settings.models_dir / challenger / "manifest.json").read_text())[
        "metrics"
    ]["promotion"]
    assert promotion["metric"] == "wape" and promotion["compared_with"] == version
    assert promotion["champion_scored"] == "re-backtested"
    assert promotion["champion_score"] is not None and promotion["refused"] is None
    words = " ".join(out.split())
    assert "vs None" not in words
    assert f"{promotion['challenger_score']:.4f} vs {promotion['champion_score']:.4f}" in words


def test_train_refuses_unknown_models_and_empty_store(settings: Settings) -> None:
    runner = CliRunner()
    empty = runner.invoke(cli, ["train", *TRAIN])
    assert empty.exit_code != 0
    assert "no sales history" in str(empty.exception) + empty.output
    _ok(runner, ["demo-data", "--skus", "6", "--days", "120"])
    bad = runner.invoke(cli, ["train", "--models", "lgbm_tweedie,prophet"])
    assert bad.exit_code != 0
    assert "prophet" in str(bad.exception) + bad.output


def test_cli_sets_passive_openmp_before_lightgbm_loads() -> None:
    """`salesfc` sets OMP_WAIT_POLICY=passive before LightGBM loads; an explicit value wins."""
    import os
    import subprocess
    import sys

    probe = (
        "import os, sys; assert 'lightgbm' not in sys.modules; import app.cli; "
        "print(os.environ.get('OMP_WAIT_POLICY'), 'lightgbm' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["passive", "True"]
    env["OMP_WAIT_POLICY"] = "active"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["active", "True"]
