"""`salesfc ingest`: exit codes, the summary, --map, --max-reject and --rejects."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app.cli import cli

runner = CliRunner()


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_ingest_loads_then_reports_unchanged(engine: Engine, tmp_path: Path) -> None:
    products = tmp_path / "products.csv"
    products.write_text("sku,name\nA,Apple\nB,Banana\n")
    first = runner.invoke(cli, ["ingest", "products", str(products)])
    assert first.exit_code == 0, first.output
    assert "loaded" in first.output and count(engine, "products") == 2
    again = runner.invoke(cli, ["ingest", "products", str(products)])
    assert again.exit_code == 0, again.output
    assert "unchanged" in again.output and "already loaded" in again.output


def test_map_and_rejects_options(engine: Engine, tmp_path: Path) -> None:
    pd.DataFrame({"sku": ["A"]}).to_parquet(tmp_path / "p.parquet")
    assert runner.invoke(cli, ["ingest", "products", str(tmp_path / "p.parquet")]).exit_code == 0
    sales = tmp_path / "export.csv"
    sales.write_text("Article,Day,Qty\nA,2024-01-01,3\nA,2024-01-02,oops\n")
    rejects = tmp_path / "out" / "bad.csv"
    args = ["ingest", "sales", str(sales), "--map", "sku=Article", "--map", "date=Day"]
    args += ["--map", "units=Qty", "--rejects", str(rejects)]
    too_many = runner.invoke(cli, args)
    assert too_many.exit_code == 1, too_many.output
    assert count(engine, "daily_sales") == 0
    assert "not a number (units)" in too_many.output
    loaded = runner.invoke(cli, [*args, "--max-reject", "0.5"])
    assert loaded.exit_code == 0, loaded.output
    assert count(engine, "daily_sales") == 1
    assert rejects.read_text().splitlines() == [
        "row,reason,column,value",
        "2,not a number,units,oops",
    ]


def test_invalid_files_exit_2(engine: Engine, tmp_path: Path) -> None:
    sales = tmp_path / "sales.csv"
    sales.write_text("sku,qty\nA,1\n")
    missing = runner.invoke(cli, ["ingest", "sales", str(sales)])
    assert missing.exit_code == 2
    assert "date" in missing.output and "units" in missing.output
    assert runner.invoke(cli, ["ingest", "widgets", str(sales)]).exit_code == 2
    assert runner.invoke(cli, ["ingest", "sales", str(tmp_path / "none.csv")]).exit_code == 2
    bad_map = runner.invoke(cli, ["ingest", "sales", str(sales), "--map", "units"])
    assert bad_map.exit_code == 2
    assert count(engine, "daily_sales") == 0
