"""Live accuracy benchmark: `salesfc accuracy` over 60 nightly snapshots of the whole m5_tiny.

Sets up a temporary PostgreSQL database (or a SQLite file with --sqlite) with m5_tiny, trains a
LightGBM champion on the data up to 60 days before the end, stores one forecast-all run for each
of the last 60 days (each from what was known that day), then times `salesfc accuracy` (the
command, as the nightly job runs it, and its scoring in-process), scores again unchanged, and
again after late orders. Figures: docs/benchmarks.md, Live accuracy and pushed orders.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

M5_TINY = ROOT.parent / "shared" / "data" / "m5_tiny" / "tiny_m5.parquet"
PG_ADMIN_URL = os.environ.get(
    "SALESFC_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SNAPSHOTS = 60
TARGET_S = 10.0


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    return f"load average {os.getloadavg()[0]:.2f}"


def main(argv: list[str]) -> int:
    from sqlalchemy import create_engine, text

    from app.services.accuracy import score_snapshots
    from app.services.batch import run_forecast_all
    from featurestore.db import make_engine
    from featurestore.ingest import import_m5, push_lines
    from featurestore.migrations import upgrade
    from featurestore.readers import last_sales_date, read_products
    from training.options import TrainOptions
    from training.pipeline import train
    from training.registry import Registry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=SNAPSHOTS)
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file instead of PostgreSQL")
    parser.add_argument("--bundle-cache", type=Path, default=None, help="reuse the champion here")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--keep-db", action="store_true", help="keep the database (for profiling)")
    args = parser.parse_args(argv)
    if not M5_TINY.is_file():
        log(f"{M5_TINY} is absent: nothing to measure")
        return 1
    work = Path(tempfile.mkdtemp(prefix="salesfc_bench_accuracy_"))
    admin = None
    name = None
    if args.sqlite:
        url = f"sqlite:///{work / 'store.db'}"
    else:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"salesfc_bench_acc_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        engine = make_engine(url)
        t = time.perf_counter()
        import_m5(engine, M5_TINY)
        log(f"m5_tiny loaded in {time.perf_counter() - t:.1f} s")
        last = last_sales_date(engine)
        assert last is not None
        first_as_of = last - dt.timedelta(days=args.snapshots)
        models = args.bundle_cache or work / "models"
        registry = Registry(models)
        if registry.champion() is None:
            t = time.perf_counter()
            options = TrainOptions(
                models=["lgbm_tweedie"], folds=1, n_estimators=args.trees, cutoff=first_as_of
            )
            version = train(engine, models, options).version
            registry.promote(version, reason="bench/live_accuracy.py")
            log(
                f"champion {version} trained up to {first_as_of} in {time.perf_counter() - t:.0f} s"
            )
        t = time.perf_counter()
        for i in range(args.snapshots):
            run_forecast_all(engine, registry, as_of=first_as_of + dt.timedelta(days=i))
        log(f"{args.snapshots} nightly snapshots stored in {time.perf_counter() - t:.0f} s")
        skus = len(read_products(engine))
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT COUNT(*) FROM forecast_rows")).scalar_one()
        log(f"{skus} SKUs, {rows:,} forecast rows")

        env = {**os.environ, "SALESFC_DATABASE_URL": url, "SALESFC_MODELS_DIR": str(models)}
        cmd = [sys.executable, "-m", "app.cli", "accuracy"]
        before = load()
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, cwd=ROOT)
        cli_s = time.perf_counter() - t
        log(f"`salesfc accuracy` (command, drift check included): {cli_s:.2f} s ({before})")

        before = load()
        t, cpu = time.perf_counter(), time.process_time()
        summary = score_snapshots(engine, detail_days=14)
        again_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
        log(
            f"scoring in-process, unchanged data: {again_s:.2f} s ({cpu_s:.2f} s of this "
            f"process's CPU), {summary.runs} runs, {summary.rows:,} SKU-days ({before})"
        )
        sku = read_products(engine)["sku"].iloc[0]
        late = [
            {
                "order_id": f"LATE-{i}",
                "line": 1,
                "sku": sku,
                "ordered_at": f"{last - dt.timedelta(days=3)}T12:00:00Z",
                "quantity": 5,
                "unit_price": 1.0,
            }
            for i in range(3)
        ]
        push_lines(engine, "orders", late)
        before = load()
        t = time.perf_counter()
        subprocess.run([*cmd, "--no-drift"], env=env, check=True, cwd=ROOT)
        late_s = time.perf_counter() - t
        log(f"`salesfc accuracy --no-drift` after late orders: {late_s:.2f} s ({before})")
        verdict = "met" if cli_s <= TARGET_S else "missed"
        print(
            f"snapshots={args.snapshots} skus={skus} forecast_rows={rows} "
            f"scored_sku_days={summary.rows} cli_s={cli_s:.2f} inprocess_s={again_s:.2f} "
            f"inprocess_cpu_s={cpu_s:.2f} "
            f"late_cli_s={late_s:.2f} target<= {TARGET_S:.0f}s: {verdict} "
            f"cpu_count={os.cpu_count()} {load()}"
        )
        engine.dispose()
    finally:
        if args.keep_db:
            log(f"kept {url}")
        elif admin is not None and name is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
