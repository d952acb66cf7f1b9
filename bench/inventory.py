"""Inventory benchmark: the (R, S) policy replayed on history, plan speed, GET latency.

Cases (each on a fresh SQLite store in a temp directory):
- ``replay-m5``, ``replay-olist``: a rolling-origin backtest of lgbm_tweedie (default strategy,
  28 days, --folds cut-offs), then ``training.inventory.replay`` at service levels 0.80, 0.90,
  0.95 and lead times 3, 7, 14 days (review 0): achieved cycle service level and fill rate,
  overall and by demand class, against the sum of calibrated daily quantiles.
- ``plan-m5``: train a bundle on m5_tiny (1 fold, 100 trees), time ``salesfc inventory-plan``
  (forecast + plan + store) for the whole catalogue; ``latency``: that store served by `salesfc
  serve` (1 worker), wrk at 8 connections on GET /v1/forecast/{sku} and GET /v1/inventory/{sku}.
- ``plan-10k``: 10,000 synthetic SKUs x 200 days (training.synth), a bundle trained on them (1
  fold, 50 trees), then the plan timed as above.

Results go to docs/benchmarks.md, ``## Inventory`` (--no-write prints them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import pandas as pd  # noqa: E402
from serve import LUA_DONE, server, wrk  # noqa: E402

from app.services.inventory import run_inventory_plan  # noqa: E402
from featurestore import migrations  # noqa: E402
from featurestore.db import make_engine  # noqa: E402
from featurestore.ingest import import_m5, ingest_file  # noqa: E402
from training.backtest import inventory_report  # noqa: E402
from training.options import TrainOptions  # noqa: E402
from training.pipeline import backtest, load_history, train  # noqa: E402
from training.registry import Registry  # noqa: E402
from training.synth import SynthConfig, generate, write_catalogue  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
DATA = ROOT.parent / "shared" / "data"
M5_TINY = DATA / "m5_tiny" / "tiny_m5.parquet"
OLIST = DATA / "olist"
OLIST_MIN_DAYS = 20  # products sold on at least this many days (519 of 32,951)
OLIST_END = dt.date(2018, 8, 15)  # the data thins out after mid-August 2018 (its README)
LEVELS = (0.8, 0.9, 0.95)
KEEP: Path | None = None  # --keep DIR: backtests pickled there and reused
LEADS = (3, 7, 14)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def store(work: Path, name: str) -> tuple[str, Any]:
    url = f"sqlite:///{work / name}.db"
    migrations.upgrade(url)
    return url, make_engine(url)


def options(folds: int, **extra: Any) -> TrainOptions:
    return TrainOptions(models=["seasonal_naive", "lgbm_tweedie"], folds=folds, **extra)


def load_olist(engine: Any, work: Path) -> None:
    lines = pd.read_parquet(OLIST / "order_lines.parquet")
    day = lines["shipping_limit_date"].dt.date
    days = day.groupby(lines["product_id"]).nunique()
    keep = days[days >= OLIST_MIN_DAYS].index
    lines = lines[lines["product_id"].isin(keep) & (day <= OLIST_END)]
    products = pd.read_parquet(OLIST / "products.parquet")
    products = products[products["product_id"].isin(keep)]
    pd.DataFrame(
        {
            "sku": products["product_id"],
            "category": products["product_category_name_english"].fillna("unknown"),
            "store": "olist",
            "region": "BR",
        }
    ).to_parquet(work / "olist_products.parquet")
    pd.DataFrame(
        {
            "order_id": lines["order_id"],
            "line": lines["order_item_id"],
            "sku": lines["product_id"],
            "ordered_at": lines["shipping_limit_date"],
            "quantity": 1.0,  # one line per unit (no quantity column)
            "unit_price": lines["price"],
        }
    ).to_parquet(work / "olist_orders.parquet")
    ingest_file(engine, "products", work / "olist_products.parquet")
    ingest_file(engine, "orders", work / "olist_orders.parquet")


def replay_case(name: str, work: Path, folds: int) -> dict[str, Any]:
    _url, engine = store(work, name)
    t0 = time.perf_counter()
    if name == "m5":
        import_m5(engine, M5_TINY)
        cutoff = None
    else:
        load_olist(engine, work)
        cutoff = OLIST_END
    history, products = load_history(engine, cutoff)
    log(f"{name}: {history['sku'].nunique()} SKUs loaded in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    keep = KEEP / f"{name}_{folds}.pkl" if KEEP else None
    if keep is not None and keep.exists():  # --keep: replay again without refitting
        result = pickle.loads(keep.read_bytes())
    else:
        result = backtest(history, products, options(folds), lambda m: log(f"{name}: {m}"))
        if keep is not None:
            keep.write_bytes(pickle.dumps(result))
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = inventory_report(result)
    report["replay_seconds"] = round(time.perf_counter() - t0, 2)
    report["backtest_seconds"] = round(seconds, 1)
    report["skus"] = int(history["sku"].nunique())
    report["cutoffs"] = [c.date().isoformat() for c in result.cutoffs]
    engine.dispose()
    return report


def plan_time(engine: Any, models_dir: Path) -> dict[str, Any]:
    registry = Registry(models_dir)
    times = []
    rows = 0
    for _ in range(3):
        t0 = time.perf_counter()
        result = run_inventory_plan(engine, registry, lead_time_days=7, review_days=7)
        times.append(time.perf_counter() - t0)
        rows = len(result.frame)
    return {"skus": rows, "seconds": [round(t, 2) for t in times], "best": round(min(times), 2)}


def trained(engine: Any, models_dir: Path, opts: TrainOptions) -> str:
    outcome = train(engine, models_dir, opts, lambda m: log(m))
    Registry(models_dir).promote(outcome.version, reason="bench")
    return outcome.version


class Setup:
    """What bench/serve.py's server() reads."""

    def __init__(self, url: str, models_dir: Path) -> None:
        self.url = url
        self.models_dir = models_dir


def latency(url: str, models_dir: Path, skus: list[str], work: Path) -> dict[str, Any]:
    scripts = {}
    paths = {
        "forecast": [f"/v1/forecast/{s}?horizon=14" for s in skus],
        "inventory": [f"/v1/inventory/{s}?lead_time_days=7&review_days=7" for s in skus],
    }
    for name, urls in paths.items():
        script = work / f"{name}.lua"
        script.write_text(
            "local paths = {\n" + ",\n".join(json.dumps(p) for p in urls) + "\n}\n"
            "local i = 0\nrequest = function()\n  i = i + 1\n"
            '  return wrk.format("GET", paths[(i % #paths) + 1])\nend\n' + LUA_DONE
        )
        scripts[name] = script
    out: dict[str, Any] = {}
    # computed: SALESFC_FORECAST_CACHE=false, every forecast and every decision computed (the
    # done-when's comparison); remembered: the stored run and the decisions kept in memory.
    for mode, cache in (("computed", False), ("remembered", True)):
        setup = Setup(url, models_dir)
        with server("salesfc", 1, setup, work, cache=cache) as base:  # type: ignore[arg-type]
            for name, script in scripts.items():
                wrk(base + paths[name][0], script, 8, 3, 10)  # warm: caches, the calibration
                out[f"{name} ({mode})"] = wrk(base + paths[name][0], script, 8, 10, 10)
    return out


def run(cases: list[str], folds: int) -> dict[str, Any]:
    results: dict[str, Any] = {"folds": folds}
    with tempfile.TemporaryDirectory(prefix="bench_inventory_") as tmp:
        work = Path(tmp)
        if "replay-m5" in cases:
            results["replay-m5"] = replay_case("m5", work, folds)
        if "replay-olist" in cases:
            results["replay-olist"] = replay_case("olist", work, folds)
        if "plan-m5" in cases or "latency" in cases:
            url, engine = store(work, "m5_plan")
            import_m5(engine, M5_TINY)
            models = work / "models_m5"
            trained(engine, models, options(1, n_estimators=100))
            results["plan-m5"] = plan_time(engine, models)
            if "latency" in cases:
                skus = pd.read_sql(
                    "select sku from products where status != 'discontinued'", engine
                )
                engine.dispose()
                results["latency"] = latency(url, models, skus["sku"].tolist()[:200], work)
            engine.dispose()
        if "plan-10k" in cases:
            url, engine = store(work, "synth10k")
            t0 = time.perf_counter()
            write_catalogue(engine, generate(SynthConfig(n_skus=10_000, n_days=200, seed=5)))
            log(f"10k SKUs written in {time.perf_counter() - t0:.1f} s")
            models = work / "models_10k"
            trained(engine, models, options(1, horizon=28, n_estimators=50))
            results["plan-10k"] = plan_time(engine, models)
            engine.dispose()
    return results


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render(results: dict[str, Any]) -> str:
    lines = ["## Inventory", ""]
    lines.append(
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on a shared machine (nproc 2), "
        f"python {platform.python_version()}. Reproduce: `.venv/bin/python bench/inventory.py`."
    )
    lines.append("")
    for case in ("replay-m5", "replay-olist"):
        rep = results.get(case)
        if not rep or "settings" not in rep:
            continue
        lines += [
            f"### Achieved cycle service level, {case.split('-')[1]} "
            f"({rep['skus']} SKUs, {rep['folds']} cut-offs {', '.join(rep['cutoffs'])}, "
            f"{rep['model']}, {rep['blocks']} residual blocks, backtest "
            f"{rep['backtest_seconds']} s, replay {rep['replay_seconds']} s)",
            "",
            "Achieved = share of SKU-cycles with demand over the lead time at or below the "
            "order-up-to level (in brackets: strictly below; for counts a calibrated level has "
            "below <= target <= at-or-below). Summed = the same with S the sum of calibrated "
            "daily quantiles.",
            "",
        ]
        classes = sorted({c for s in rep["settings"] for c in s["achieved"]["by_demand_class"]})
        head = ["lead", "target", "achieved", "fill rate", "summed", *classes]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for s in rep["settings"]:
            a, n = s["achieved"], s["summed_daily_quantiles"]
            by = a["by_demand_class"]
            nb = n["by_demand_class"]
            per = [
                f"{_pct(by[c]['cycle_service_level'])} ({_pct(by[c]['share_below'])}), "
                f"n={by[c]['cycles']}; summed {_pct(nb[c]['cycle_service_level'])}"
                if c in by
                else "-"
                for c in classes
            ]
            lines.append(
                f"| {s['lead_time_days']} | {_pct(s['service_level'])} | "
                f"{_pct(a['cycle_service_level'])} ({_pct(a['share_below'])}) | "
                f"{_pct(a['fill_rate'])} | {_pct(n['cycle_service_level'])} | "
                + " | ".join(per)
                + " |"
            )
        lines.append("")
    lines.append("### Plan and latency")
    lines.append("")
    for case, label in (("plan-m5", "m5_tiny catalogue"), ("plan-10k", "10,000 synthetic SKUs")):
        if case in results:
            r = results[case]
            lines.append(
                f"- `inventory-plan` ({label}, {r['skus']:,} SKUs, forecast + plan + store): "
                f"best {r['best']} s of {r['seconds']}"
            )
    if "latency" in results:
        for name, r in results["latency"].items():
            rps = r["requests"] / (r["duration_us"] / 1e6)
            path, _, mode = name.partition(" ")
            lines.append(
                f"- GET /v1/{path}/{{sku}} {mode}, 1 worker, 8 connections, 10 s: "
                f"{rps:,.0f} req/s, "
                f"mean {r['mean_us'] / 1000:.2f} ms, p50 {r['p50_us'] / 1000:.2f} ms, "
                f"p99 {r['p99_us'] / 1000:.2f} ms, errors {r['status'] + r['timeout']}"
            )
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(r"^## Inventory\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="replay-m5,replay-olist,plan-m5,latency,plan-10k")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also keep the raw results here")
    parser.add_argument("--from-json", type=Path, help="render these results, run nothing")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep backtests here and reuse them")
    args = parser.parse_args(argv)
    global KEEP
    KEEP = args.keep
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(args.cases.split(","), args.folds)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    section = render(results)
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
