"""`salesfc` turns what a user can do wrong into one line and a non-zero exit, never a
traceback; `--debug` / SALESFC_DEBUG=1 let it through. SQLite and PostgreSQL where a store
is used."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.cli import cli, main
from featurestore.config import Settings, get_settings
from featurestore.db import engine_for
from featurestore.readers import last_sales_date
from tests.conftest import create_pg_database, drop_pg_database
from training.bundle import save_bundle
from training.errors import TrainingError
from training.registry import Registry

runner = CliRunner()
SMALL = ["demo-data", "--skus", "6", "--days", "90", "--seed", "5"]


def one_line_error(result: Result, *needles: str) -> str:
    """The command failed with exit 1 and one `error:` line (no traceback) naming the needles."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def usage_error(result: Result, *needles: str) -> None:
    """Click's usage error: exit 2, `Error: ...` on stderr naming the needles, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and "Error:" in result.stderr
    text = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in text, text


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Settings on an empty database nobody has run `salesfc db upgrade` on."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'new.db'}"
    else:
        admin = request.getfixturevalue("pg_server")
        url = create_pg_database(admin)
        request.addfinalizer(lambda: drop_pg_database(admin, url))
    monkeypatch.setenv("SALESFC_DATABASE_URL", url)
    monkeypatch.setenv("SALESFC_MODELS_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    engine_for.cache_clear()
    yield url
    engine_for(url).dispose()  # the cached engine's pooled connections, before the drop
    get_settings.cache_clear()
    engine_for.cache_clear()


def test_commands_before_db_upgrade_say_to_run_it(unmigrated: str, tmp_path: Path) -> None:
    sales = tmp_path / "sales.csv"
    sales.write_text("sku,date,units\nA,2026-01-01,3\n")
    for args in (
        ["db", "stats"],
        ["demo-data", "--skus", "4"],
        ["train", "--folds", "1"],
        ["backtest", "--folds", "1"],
        ["forecast-all"],
        ["ingest", "sales", str(sales)],
    ):
        one_line_error(runner.invoke(cli, args), "not migrated", "salesfc db upgrade")


def test_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESFC_DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:1/nowhere")
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        line = one_line_error(runner.invoke(cli, ["db", "stats"]), "cannot use the feature store")
        assert "secret" not in line and "***" in line and "SALESFC_DATABASE_URL" in line
    finally:
        get_settings.cache_clear()
        engine_for.cache_clear()


def test_bad_option_values_are_usage_errors(tmp_path: Path) -> None:
    # Checked when the command line is parsed: nothing is read or trained first.
    cases = [
        (["train", "--models", "lgbm_tweedie,prophet"], ["prophet", "lgbm_tweedie"]),
        (["backtest", "--metric", "r2"], ["'r2' is not a backtest metric", "rmsse"]),
        (["train", "--metric", "r2"], ["'r2'"]),
        (["train", "--promote", "maybe"], ["if-better"]),
        (["forecast-all", "--quantiles", "abc"], ["'abc' is not a number"]),
        (["forecast-all", "--quantiles", "0.1,1.5"], ["1.5 is not a level strictly between"]),
        (["forecast-all", "--quantiles", "0"], ["strictly between 0 and 1"]),
        (["forecast-all", "--out", str(tmp_path / "x.txt")], [".csv or .parquet"]),
        (["forecast-all", "--as-of", "yesterday"], ["not an ISO date"]),
        (["ingest", "sales", str(tmp_path)], ["is a directory"]),
        (["ingest", "sales", str(tmp_path / "none.csv")], ["does not exist"]),
    ]
    for args, needles in cases:
        usage_error(runner.invoke(cli, args), *needles)


def test_train_cutoff_after_the_data_is_refused_before_fitting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(cli, SMALL).exit_code == 0
    last = last_sales_date(engine_for(settings.database_url))
    args = ["train", "--cutoff", "2030-01-01", "--models", "seasonal_naive,lgbm_tweedie"]
    line = one_line_error(runner.invoke(cli, [*args, "--folds", "1", "--horizon", "7"]))
    assert f"the cut-off 2030-01-01 is after the last sales day {last}" in line
    early = runner.invoke(cli, ["backtest", "--cutoff", "2001-01-01", "--folds", "1"])
    one_line_error(early, "no sales history up to the cut-off 2001-01-01")

    # --debug (before or, through main, after the command) and SALESFC_DEBUG=1 show the error.
    debug = runner.invoke(cli, ["--debug", *args])
    assert debug.exit_code == 1 and isinstance(debug.exception, TrainingError)
    env = runner.invoke(cli, args, env={"SALESFC_DEBUG": "1"})
    assert isinstance(env.exception, TrainingError)
    monkeypatch.setattr(sys, "argv", ["salesfc", *args, "--debug"])
    with pytest.raises(TrainingError, match="after the last sales day"):
        main()


def test_forecast_all_refuses_an_origin_after_the_data_and_warns_when_stale(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(cli, SMALL).exit_code == 0
    last = last_sales_date(engine)
    assert last is not None
    later = last + dt.timedelta(days=10)
    usage_error(
        runner.invoke(cli, ["forecast-all", "--as-of", later.isoformat()]),
        f"{later} is 10 day(s) after the last sales day {last}",
    )
    # The demo data ends yesterday: fresh, so no warning; the champion is missing, one line.
    fresh = runner.invoke(cli, ["forecast-all"])
    one_line_error(fresh, "no champion has been promoted")
    assert "warning" not in fresh.stderr
    monkeypatch.setattr("app.cli.training._today", lambda: later)
    stale = runner.invoke(cli, ["forecast-all"])
    assert f"warning: the last sales day is {last}, 10 days ago" in " ".join(stale.stderr.split())


def test_forecast_all_on_a_champion_failing_its_checksum(settings: Settings) -> None:
    assert runner.invoke(cli, SMALL).exit_code == 0
    fields = {
        "data_start": "2026-01-01",
        "data_end": "2026-03-01",
        "cutoff": "2026-03-01",
        "sku_count": 6,
        "features": ["lag_28"],
        "metrics": {"rmsse": 0.9},
        "git_sha": None,
    }
    version = save_bundle(settings.models_dir, {"calibration": {"scale": 1.0}}, fields).name
    Registry(settings.models_dir).promote(version)
    (settings.models_dir / version / "calibration.joblib").write_bytes(b"tampered")
    result = runner.invoke(cli, ["forecast-all", "--no-store"])
    one_line_error(result, "model bundle refused", "checksum", "salesfc models list")


def test_lightgbm_warnings_never_reach_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    import lightgbm
    import numpy as np

    from app.cli.progress import quiet_library_warnings

    quiet_library_warnings()
    rng = np.random.default_rng(0)
    data = lightgbm.Dataset(rng.normal(size=(50, 2)), label=rng.poisson(2.0, size=50))
    # Without verbosity=-1 (a Dataset built apart from its model's parameters, say) LightGBM
    # prints "[LightGBM] [Info] ..." lines on stdout through its Python logger.
    lightgbm.train({"objective": "poisson"}, data, num_boost_round=2)
    out, err = capfd.readouterr()
    assert "[LightGBM]" not in out and "[LightGBM]" not in err


def test_train_json_is_the_only_stdout(settings: Settings) -> None:
    assert runner.invoke(cli, SMALL).exit_code == 0
    args = ["train", "--models", "seasonal_naive,moving_average", "--folds", "1"]
    result = runner.invoke(cli, [*args, "--horizon", "7", "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    doc = json.loads(result.stdout)
    assert doc["metric"] == "rmsse" and doc["version"] in result.stderr
    models = {row["model"] for row in doc["comparison"]}
    singles = {"seasonal_naive", "moving_average"}
    assert singles <= models  # and the mean of the best ones (--ensemble-top)
    assert all(m.startswith("ensemble(") for m in models - singles)
