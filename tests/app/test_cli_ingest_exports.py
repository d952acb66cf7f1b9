"""`salesfc ingest`: the column help and the options for real exports (issue #11, D10)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app.cli import cli
from featurestore.schema import ENTITIES, column_type

runner = CliRunner()


def test_help_lists_the_entitys_columns() -> None:
    result = runner.invoke(cli, ["ingest", "orders", "--help"])
    assert result.exit_code == 0, result.output
    assert "orders columns" in result.output and "products columns" not in result.output
    for column in ENTITIES["orders"].columns:
        line = next(x for x in result.output.splitlines() if x.split()[:1] == [column.name])
        assert column_type(column) in line and column.example in line
        assert ("required" if column.required else "optional") in line
        assert column.unit in line and column.doc in result.output
    every = runner.invoke(cli, ["ingest", "--help"])
    assert all(f"{name} columns" in every.output for name in ENTITIES)


def test_export_options(engine: Engine, tmp_path: Path) -> None:
    products = tmp_path / "products.csv"
    products.write_text("SKU,Name\nA,Apple\n")
    assert runner.invoke(cli, ["ingest", "products", str(products)]).exit_code == 0
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "Order Number,SKU,Created At,Unit Price,Discount Amount,Status\n"
        "1001,A,2024-01-05T10:00:00Z,10,2.5,paid\n"
        "1001,A,2024-01-05T10:00:00Z,0,0,paid\n"
    )
    args = ["ingest", "orders", str(orders), "--map", "order_id=Order Number"]
    args += ["--map", "ordered_at=Created At", "--map", "discount=Discount Amount"]
    result = runner.invoke(cli, [*args, "--ignore", "Status", "--discount", "amount"])
    assert result.exit_code == 0, result.output
    with engine.connect() as conn:
        got = conn.execute(
            text("SELECT line, quantity, discount, status FROM order_lines ORDER BY line")
        ).all()
        assert [tuple(r) for r in got] == [(1, 1.0, 0.25, "completed"), (2, 1.0, 0.0, "free")]
    counted = runner.invoke(
        cli, [*args, "--ignore", "Status", "--discount", "amount", "--zero-price-demand"]
    )
    assert counted.exit_code == 0, counted.output
    with engine.connect() as conn:
        units = conn.execute(text("SELECT units FROM daily_sales")).scalar_one()
    assert units == 2.0
    bad = runner.invoke(cli, ["ingest", "orders", str(orders), "--discount", "percent"])
    assert bad.exit_code == 2
    m5 = runner.invoke(cli, ["ingest", "m5", str(orders), "--zero-price-demand"])
    assert m5.exit_code == 2
