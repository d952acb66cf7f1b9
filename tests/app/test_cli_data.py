"""`salesfc demo-data` loads the synthetic catalogue; --if-empty leaves a filled store alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from app.cli import cli
from featurestore.config import get_settings
from featurestore.db import engine_for
from featurestore.stats import store_stats
from training.synth import SynthConfig, generate


def test_demo_data_loads_the_catalogue(engine: Engine) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["demo-data", "--skus", "12", "--days", "45", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "sales" in result.output and "loaded" in result.output

    expected = generate(SynthConfig(n_skus=12, n_days=45, seed=3))
    stats = store_stats(engine)
    assert stats["skus"] == 12
    assert stats["tables"]["daily_sales"] == len(expected.sales)
    assert stats["tables"]["prices"] == len(expected.prices)
    assert stats["tables"]["promotions"] == len(expected.promotions)
    assert stats["total_units"] == pytest.approx(float(expected.sales["units"].sum()))

    again = runner.invoke(cli, ["demo-data", "--if-empty", "--skus", "30"])
    assert again.exit_code == 0, again.output
    assert "already holds 12 products" in again.output
    assert store_stats(engine) == stats


def test_demo_data_on_an_unmigrated_store_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESFC_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["demo-data", "--if-empty"])
    finally:
        engine_for(get_settings().database_url).dispose()
        get_settings.cache_clear()
        engine_for.cache_clear()
    assert result.exit_code == 1
    assert "salesfc db upgrade" in result.output
