"""Ablation of the learned model's data rules on one held-out month (issue 12, feature side).

    .venv/bin/python bench/ablate.py --dataset olist --work /tmp/ablate-olist \
        --variants today,default,no-zero-runs,no-closures,no-paid-price,yearly-always,no-caps

The store is built once per ``--work`` directory through `salesfc ingest` (as bench/accuracy.py
builds it: the same files, mappings and cut-off), then each variant fits the default Forecaster
on the history up to the cut-off, forecasts the next 28 days and is scored on the same SKUs as
bench/accuracy.py's table (RMSSE, RMSSE*, WAPE, bias; days 1-7 apart), beside the flat 28-day
mean. A variant switches one rule off (or on) against the default; ``today`` switches them all
off (session 5's learned model). The switches are the modules' own constants, set for one fit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import accuracy as acc
from peers import score_long

HORIZON = 28

# variant -> (constant overrides, Forecaster keyword overrides, history columns dropped)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], tuple[str, ...]]] = {
    "default": ({}, {}, ()),
    "today": (
        {"training.forecaster.YEARLY_MIN_DAYS": 0},
        {"clean": False, "builder_params": {"cap_units": False}},
        ("price_paid", "stock_out", "closed"),
    ),
    "no-clean": ({}, {"clean": False}, ()),
    "no-zero-runs": ({"training.cleaning.ZERO_RUN_CHANCE": 0.0}, {}, ()),
    "no-closures": ({"training.cleaning.CLOSURE_MIN_MEDIAN": float("inf")}, {}, ()),
    "no-paid-price": ({}, {}, ("price_paid",)),
    "yearly-always": ({"training.forecaster.YEARLY_MIN_DAYS": 0}, {}, ()),
    "no-caps": ({}, {"builder_params": {"cap_units": False}}, ()),
    "short": ({}, {"floors": (1, 14, 28)}, ()),
    "per-stage": ({}, {"tree_budget": "per_stage"}, ()),
    "direct": ({}, {"strategy": "direct"}, ()),
    "slow-1000": ({}, {"model_params": {"n_estimators": 1000, "learning_rate": 0.025}}, ()),
    "slow-2000": ({}, {"model_params": {"n_estimators": 2000, "learning_rate": 0.0125}}, ()),
    "slow-1000-leaves15": (
        {},
        {"model_params": {"n_estimators": 1000, "learning_rate": 0.025, "num_leaves": 15}},
        (),
    ),
}


@contextlib.contextmanager
def _constants(overrides: dict[str, Any]) -> Iterator[None]:
    import importlib

    saved = []
    for path, value in overrides.items():
        module, _, name = path.rpartition(".")
        mod = importlib.import_module(module)
        saved.append((mod, name, getattr(mod, name)))
        setattr(mod, name, value)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def _store(dataset: str, work: Path) -> tuple[dict[str, str], dt.date, int]:
    ds = acc.DATASETS[dataset](work, False)
    env = acc._env(work)
    if not (work / "store.db").exists():
        acc.salesfc(env, "db", "upgrade")
        for entity, path, mapping in ds.files:
            maps = [a for pair in mapping for a in ("--map", pair)]
            acc.salesfc(env, "ingest", entity, str(path), *maps)
    from featurestore.db import make_engine
    from featurestore.readers import last_sales_date

    engine = make_engine(env["SALESFC_DATABASE_URL"])
    last = last_sales_date(engine)
    engine.dispose()
    assert last is not None
    return env, ds.cutoff or last - dt.timedelta(days=HORIZON), ds.min_selling_days


def _scores(actual: pd.DataFrame, pred: pd.DataFrame, train: pd.DataFrame) -> dict[str, Any]:
    out = score_long(actual, pred, train)
    first = pred["date"] <= pred["date"].min() + pd.Timedelta(days=6)
    week = score_long(actual[actual["date"].isin(pred.loc[first, "date"])], pred[first], train)
    keys = ("rmsse", "rmsse_untrimmed", "wape", "bias")
    return {
        **{k: round(float(out[k]), 4) for k in keys},
        "d1_7": {k: round(float(week[k]), 4) for k in ("rmsse", "wape", "bias")},
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(acc.DATASETS), required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--variants", default="today,default")
    parser.add_argument("--trees", type=int, default=None, help="n_estimators (default: model's)")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    env, cutoff, min_days = _store(args.dataset, args.work)
    known, actual_frame, products = acc._frames(env, cutoff)
    scored = acc._scored(known, cutoff, min_days)
    history = known[known["date"] <= pd.Timestamp(cutoff)]
    train = history[history["sku"].isin(scored) & history["units"].notna()]
    train = train[["sku", "date", "units"]].rename(columns={"units": "y"}).astype({"y": float})
    actual = actual_frame[actual_frame["sku"].isin(scored) & actual_frame["units"].notna()]
    actual = actual.rename(columns={"units": "y"}).astype({"y": np.float64})
    dates = pd.date_range(cutoff + dt.timedelta(days=1), periods=HORIZON, freq="D")
    flat = acc._flat(train, dates, acc._mean_last(28))
    rows = [{"variant": "flat mean 28 d", **_scores(actual, flat, train)}]
    print(json.dumps(rows[0]), flush=True)
    from training.forecaster import Forecaster

    for name in args.variants.split(","):
        constants, kwargs, dropped = VARIANTS[name]
        kwargs = dict(kwargs)
        if "builder_params" in kwargs:
            from training.forecaster import DEFAULT_BUILDER_PARAMS

            kwargs["builder_params"] = {**DEFAULT_BUILDER_PARAMS, **kwargs["builder_params"]}
        if args.trees:
            kwargs["model_params"] = {"n_estimators": args.trees}
        hist = history.drop(columns=[c for c in dropped if c in history])
        frame = known.drop(columns=[c for c in dropped if c in known])
        with _constants(constants):
            model = Forecaster(horizon=HORIZON, **kwargs)
            c0 = time.process_time()
            model.fit(hist, products)
            cpu = time.process_time() - c0
            pred = model.predict(frame, products, pd.Timestamp(cutoff), HORIZON)
        pred = pred[pred["sku"].isin(scored)][["sku", "date", "mean"]]
        pred = pred.rename(columns={"mean": "yhat"}).astype({"sku": object})
        row = {
            "variant": name,
            **_scores(actual, pred, train),
            "fit_cpu_s": round(cpu, 1),
            "cleaning": getattr(model, "cleaning_", {}),
            "yearly": getattr(model, "yearly_", None),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with args.out.open("a") as fh:
            for row in rows:
                fh.write(json.dumps({"dataset": args.dataset, **row}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
