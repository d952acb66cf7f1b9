"""`salesfc db`: migrations, statistics and the holiday calendar from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from app.cli import cli
from featurestore import migrations
from featurestore.config import Settings


def test_db_commands(settings: Settings) -> None:
    runner = CliRunner()
    empty = json.loads(runner.invoke(cli, ["db", "stats", "--json"]).output)
    assert empty["skus"] == 0 and empty["total_units"] == 0 and empty["first_sales_date"] is None
    assert runner.invoke(cli, ["demo-data", "--skus", "8", "--days", "90"]).exit_code == 0
    stats = json.loads(runner.invoke(cli, ["db", "stats", "--json"]).output)
    assert stats["skus"] == 8 and stats["tables"]["products"] == 8
    assert stats["tables"]["daily_sales"] > 0 and stats["total_units"] > 0
    again = runner.invoke(cli, ["db", "sync-holidays"])
    assert again.exit_code == 0 and "0 holiday rows added" in again.output


def test_upgrade_and_downgrade_from_the_cli(settings: Settings) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "downgrade", "base"]).exit_code == 0
    assert migrations.current_tables(settings.database_url) == set()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert "products" in migrations.current_tables(settings.database_url)
