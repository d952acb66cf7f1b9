"""Same results, local vs Dask: the default backtest of one store on both engines, side by side.

The issue 16 target: on m5_tiny the Dask engine's backtest metrics within 0.5% of the local
engine's. Both runners get `salesfc train`'s default options (candidates, folds, ensemble); the
Dask one a LocalCluster of ``--workers`` processes of one thread each. Printed: every model's
RMSSE, WAPE, MASE, RMSE and MAE on both engines with the relative difference, what the
selection ships on each, the wall times and the 1-minute load average (docs/benchmarks.md,
Scale out).

    export SALESFC_DATABASE_URL=sqlite:///./data/m5.db    # the README's m5_tiny store
    .venv/bin/python bench/engines.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from training.backtest import BacktestResult  # noqa: E402

METRICS = ("rmsse", "wape", "mase", "rmse", "mae")
LEARNED = ("lgbm_tweedie",)  # the default candidates' learned models (the seed is theirs)


def _load() -> float:
    return os.getloadavg()[0]


def _rel(local: float | None, dask: float | None) -> str:
    if local is None or dask is None:
        return "n/a"
    if local == 0:
        return "0" if dask == 0 else "inf"
    return f"{(dask - local) / local:+.3%}"


def table(local: BacktestResult, dask: BacktestResult) -> list[dict[str, Any]]:
    """One row per model of the local ranking: each metric on both engines and the difference."""
    rows = []
    for name in local.ranking:
        row: dict[str, Any] = {"model": name}
        for m in METRICS:
            a = local.reports[name]["overall"].get(m)
            b = dask.reports.get(name, {}).get("overall", {}).get(m)
            row[m] = (a, b, _rel(a, b))
        rows.append(row)
    return rows


def _print_pair(local: BacktestResult, dask: BacktestResult) -> None:
    """Every model's metrics on both engines, and what each would ship."""
    from training.selection import choose

    head = " | ".join(f"{m} local | {m} dask | diff" for m in METRICS)
    print(f"\n| model | {head} |")
    print("|---|" + "---:|" * (3 * len(METRICS)))
    for row in table(local, dask):
        cells = []
        for m in METRICS:
            a, b, d = row[m]
            cells += [
                f"{a:.6f}" if a is not None else "n/a",
                f"{b:.6f}" if b is not None else "n/a",
                d,
            ]
        print(f"| {row['model']} | " + " | ".join(cells) + " |")
    shipped_local, shipped_dask = choose(local), choose(dask)
    print(
        f"\nships: local {shipped_local.name} (segments {dict(shipped_local.segments)}); "
        f"dask {shipped_dask.name} (segments {dict(shipped_dask.segments)})"
    )
    for label, sel, res in (("local", shipped_local, local), ("dask", shipped_dask, dask)):
        overall = res.reports[sel.name]["overall"]
        print(f"shipped on {label}: rmsse {overall['rmsse']:.6f} wape {overall['wape']:.6f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("SALESFC_DATABASE_URL"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folds", type=int, default=None, help="default: train's")
    parser.add_argument(
        "--seeds",
        type=lambda raw: [int(x) for x in raw.split(",")],
        default=[0],
        help="LightGBM seeds: each engine once per seed, then the means (e.g. 0,1,2)",
    )
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("give --url or set SALESFC_DATABASE_URL (the store to backtest)")

    from distributed import Client, LocalCluster

    from featurestore.db import make_engine
    from training.engine.cluster import worker_url
    from training.engine.dask_runner import DaskRunner
    from training.engine.runner import LocalRunner
    from training.options import TrainOptions
    from training.pipeline import backtest_on, load_history

    base = TrainOptions() if args.folds is None else TrainOptions(folds=args.folds)
    engine = make_engine(args.url)
    print(
        f"options: models {', '.join(base.models)}; folds {base.folds}; "
        f"ensemble_top {base.ensemble_top}; metric {base.metric}; seeds {args.seeds}"
    )
    history = load_history(engine)
    learned = "lgbm_tweedie/multi"
    pairs: list[tuple[BacktestResult, BacktestResult]] = []
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        for seed in args.seeds:
            per_model = {m: {**base.model_params.get(m, {}), "seed": seed} for m in LEARNED}
            options = replace(base, model_params={**base.model_params, **per_model})
            load0 = _load()
            t0 = time.perf_counter()
            local = backtest_on(LocalRunner(*history), options)
            local_s = time.perf_counter() - t0
            load1 = _load()
            t1 = time.perf_counter()
            runner = DaskRunner.open(client, engine, worker_url(args.url, "local"))
            try:
                dask = backtest_on(runner, options)
            finally:
                runner.close()
            dask_s = time.perf_counter() - t1
            load2 = _load()
            pairs.append((local, dask))
            print(f"\n## seed {seed}")
            _print_pair(local, dask)
            print(
                f"wall: local {local_s:.1f} s (load {load0:.1f} -> {load1:.1f}); "
                f"dask {args.workers} workers {dask_s:.1f} s (load {load1:.1f} -> {load2:.1f})"
            )
    if len(pairs) > 1:
        # Each engine's mean over the seeds: what the engine gives, its run-to-run noise apart.
        print(f"\n## {learned}, mean over seeds {args.seeds} (min .. max)")
        for m in METRICS:
            a = [r.reports[learned]["overall"][m] for r, _ in pairs]
            b = [r.reports[learned]["overall"][m] for _, r in pairs]
            print(
                f"{m}: local {np.mean(a):.6f} ({min(a):.6f} .. {max(a):.6f}); "
                f"dask {np.mean(b):.6f} ({min(b):.6f} .. {max(b):.6f}); "
                f"difference of the means {_rel(float(np.mean(a)), float(np.mean(b)))}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
