"""`salesfc inventory-plan`, the `inventory` key of `backtest --json` and the report's section,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from app.cli import cli
from featurestore.config import Settings
from featurestore.db import get_engine
from featurestore.inventory_plans import PLAN_COLUMNS, latest_plan
from featurestore.tables import Product

TRAIN = ["--models", "seasonal_naive,lgbm_tweedie", "--strategy", "direct", "--horizon", "14"]


def _ok(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_inventory_plan_backtest_and_report(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    _ok(runner, ["demo-data", "--skus", "12", "--days", "240", "--seed", "3"])
    _ok(runner, ["train", *TRAIN, "--folds", "2", "--n-estimators", "20"])
    engine = get_engine()
    with engine.begin() as conn:
        active = select(Product.sku).where(Product.status != "discontinued")
        sku = conn.execute(active.order_by(Product.sku)).scalars().first()
        conn.execute(
            update(Product).where(Product.sku == sku).values(attributes={"lead_time_days": 3})
        )

    out = tmp_path / "plan.csv"
    args = ["--lead-time-days", "6", "--review-days", "4", "--service-level", "0.9"]
    _ok(runner, ["inventory-plan", "--out", str(out), *args])
    plan = pd.read_csv(out)
    assert list(plan.columns) == list(PLAN_COLUMNS)
    # The product's attribute, else the option.
    assert plan.set_index("sku")["lead_time_days"].to_dict()[sku] == 3
    assert set(plan["lead_time_days"]) == {3, 6}
    assert (plan["review_days"] == 4).all() and (plan["service_level"] == 0.9).all()
    assert (plan["order_up_to"] >= plan["reorder_point"]).all()
    assert (
        plan["safety_stock"].round(3).tolist()
        == (plan["order_up_to"] - plan["mean"]).round(3).tolist()
    )
    stored = latest_plan(engine)
    assert stored is not None and stored.rows == len(plan)
    parquet = tmp_path / "plan.parquet"
    _ok(runner, ["inventory-plan", "--out", str(parquet), "--no-store", *args])
    assert pd.read_parquet(parquet)["order_up_to"].tolist() == plan["order_up_to"].tolist()

    bt = tmp_path / "bt.json"
    _ok(runner, ["backtest", "--json", str(bt), *TRAIN, "--folds", "2", "--n-estimators", "20"])
    inv = json.loads(bt.read_text())["inventory"]
    assert inv["folds"] == 2 and inv["settings"]
    first = inv["settings"][0]
    assert {"cycle_service_level", "fill_rate", "by_demand_class"} <= set(first["achieved"])
    assert "cycle_service_level" in first["summed_daily_quantiles"]

    html = tmp_path / "report.html"
    _ok(runner, ["report", "--out", str(html)])
    assert "Inventory policy on history" in html.read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--service-level", "0.5"], "service_level"),
        (["--service-level", "0.9995"], "service_level"),
        (["--lead-time-days", "0"], "lead-time-days"),
        (["--out", "plan.txt"], ".csv or .parquet"),
    ],
)
def test_bad_options_are_refused(settings: Settings, args: list[str], needle: str) -> None:
    full = ["inventory-plan", *(["--out", "p.csv"] if "--out" not in args else []), *args]
    result = CliRunner().invoke(cli, full)
    assert result.exit_code == 2
    assert needle in result.output
