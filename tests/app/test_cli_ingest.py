"""`salesfc ingest`: exit codes, the summary, --map, --max-reject, --rejects and --force."""

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


def test_force_reloads_a_repeat_and_mixed_days_are_listed(engine: Engine, tmp_path: Path) -> None:
    products = tmp_path / "products.csv"
    products.write_text("sku,name\nA,Apple\n")
    assert runner.invoke(cli, ["ingest", "products", str(products)]).exit_code == 0
    first, second = tmp_path / "s1.csv", tmp_path / "s2.csv"
    first.write_text("sku,date,units\nA,2024-01-01,36\n")
    second.write_text("sku,date,units\nA,2024-01-01,40\n")
    for path in (first, second):
        assert runner.invoke(cli, ["ingest", "sales", str(path)]).exit_code == 0
    repeat = runner.invoke(cli, ["ingest", "sales", str(first)])
    assert repeat.exit_code == 0, repeat.output
    assert "skipped" in repeat.output and "--force" in repeat.output
    forced = runner.invoke(cli, ["ingest", "sales", str(first), "--force"])
    assert forced.exit_code == 0, forced.output
    assert "loaded" in forced.output
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,line,sku,ordered_at,quantity\no1,1,A,2024-01-01T10:00:00,1\n")
    mixed = runner.invoke(cli, ["ingest", "orders", str(orders)])
    assert mixed.exit_code == 0, mixed.output
    assert "1 SKU-day(s) keep their directly loaded daily sales" in mixed.output
    assert "A 2024-01-01" in mixed.output
    with engine.connect() as conn:
        units = conn.execute(text("SELECT units, source FROM daily_sales")).all()
    assert [tuple(r) for r in units] == [(36.0, "direct")]


def test_a_quote_left_open_exits_2_with_its_line(engine: Engine, tmp_path: Path) -> None:
    products = tmp_path / "products.csv"
    products.write_text('sku,name\nA,Apple\nB,"Banana\nC,Cherry\n')
    result = runner.invoke(cli, ["ingest", "products", str(products)])
    assert result.exit_code == 2
    assert "line 3" in result.output and "quote left open" in result.output
    assert count(engine, "products") == 0
