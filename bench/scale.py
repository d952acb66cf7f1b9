"""Scale benchmark: the full retrain and forecast-all from the PostgreSQL store, local and Dask.

Synthetic M5 scale by default (training.synth: 30,000 SKUs x 1,941 days, about 58M daily rows),
loaded through the ordinary ingestion path into a PostgreSQL database of its own. Each case runs
in a fresh process (bench/train.py's ``spawn``): the full retrain (`salesfc train`'s defaults:
backtest, champion refit, calibration, cold-start model) with the local engine and with the
Dask engine on a 2-worker LocalCluster, then forecast-all of the whole catalogue from the local
bundle with both engines. Reported: wall time, peak memory (the process; each Dask worker),
where the time goes (the training phases) and the 1-minute load average around each case.
Results: docs/benchmarks.md (Scale out) and docs/scale.md.

    .venv/bin/python bench/scale.py --skus 1000            # a small validation run
    .venv/bin/python bench/scale.py                        # 30,000 SKUs x 1,941 days
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
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

from peers import emit, peak_rss_mb  # noqa: E402
from train import machine, spawn  # noqa: E402

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _db_url(args: argparse.Namespace) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + f"/salesfc_scale_{args.skus}x{args.days}"


def _vm_hwm_mb() -> float:
    """Peak resident memory of the calling process (a Dask worker's own), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm() -> bool:
    """Restart this process's VmHWM from its current RSS (Linux clear_refs "5")."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Clock:
    """Seconds between the training's progress messages, summed by phase, and each phase's peak
    resident memory (VmHWM, restarted at every message)."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.phase = "reading history"
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self.resets = _reset_hwm()

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + now - self.last
        if self.resets:
            hwm = _vm_hwm_mb()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), round(hwm, 1))
            _reset_hwm()
        self.last = now
        if message.startswith("fold"):
            self.phase = "backtest " + message.split(": ")[-1]
        elif "refitting" in message or message.startswith("champion"):
            self.phase = "champion refit"
        elif message.startswith("cold-start"):
            self.phase = "cold-start model (fit + backtest)"
        print(f"[bench/scale] {now - self.t0:8.1f}s {message}", file=sys.stderr, flush=True)

    def done(self) -> dict[str, float]:
        self("done")
        return {k: round(v, 1) for k, v in self.seconds.items()}


class MemTrace:
    """Where the memory peaks: a thread reads this process's resident set every 0.1 s and, at
    each new high (50 MiB above the last one), keeps every thread's Python stack (frames of
    this project only). ``--mem-trace``: the highs are printed and returned with the case."""

    def __init__(self) -> None:
        import threading

        self.highs: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self.t0 = time.perf_counter()
        self.thread.start()

    def _rss_mb(self) -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * self.page_mb

    def _stacks(self) -> list[list[str]]:
        import threading
        import traceback

        me = threading.get_ident()
        out = []
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            lines = [
                f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} {f.name}"
                for f in traceback.extract_stack(frame)
                if f.filename.startswith(str(ROOT)) and "/.venv" not in f.filename
            ]
            if lines:
                out.append(lines[-6:])
        return out

    def _run(self) -> None:
        last = 0.0
        while not self.stop.wait(0.1):
            rss = self._rss_mb()
            if rss > last + 50:
                last = rss
                self.highs.append(
                    {
                        "at_s": round(time.perf_counter() - self.t0, 1),
                        "rss_mb": round(rss),
                        "stacks": self._stacks(),
                    }
                )

    def done(self) -> list[dict[str, Any]]:
        self.stop.set()
        self.thread.join()
        top = sorted(self.highs, key=lambda h: -h["rss_mb"])[:8]
        for h in top:
            print(f"[bench/scale] high {h['rss_mb']} MiB at {h['at_s']} s", file=sys.stderr)
            for stack in h["stacks"]:
                print("    " + " <- ".join(reversed(stack)), file=sys.stderr)
        return top


# ---------------------------------------------------------------- children


def child_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """A fresh database of the size asked for, migrated and filled through ingestion."""
    from sqlalchemy import create_engine, text

    from featurestore import migrations
    from featurestore.db import make_engine
    from featurestore.stats import store_stats
    from training.synth import SynthConfig, generate, write_catalogue

    url = _db_url(args)
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        exists = conn.execute(text("select 1 from pg_database where datname = :n"), {"n": name})
        if exists.first() is not None and not args.fresh:
            return {"case": "prepare", "url": url, "reused": True}
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    migrations.upgrade(url)
    t0 = time.perf_counter()
    cat = generate(SynthConfig(n_skus=args.skus, n_days=args.days, seed=3))
    generated = time.perf_counter() - t0
    engine = make_engine(url)
    write_catalogue(engine, cat)
    stats = store_stats(engine)
    return {
        "case": "prepare",
        "url": url,
        "generate_seconds": round(generated, 1),
        "ingest_seconds": round(time.perf_counter() - t0 - generated, 1),
        "store": stats,
    }


def _train(args: argparse.Namespace, engine_name: str) -> dict[str, Any]:
    from featurestore.db import make_engine
    from training.engine.select import history_runner
    from training.options import TrainOptions
    from training.pipeline import train

    url = _db_url(args)
    engine = make_engine(url)
    models = Path(args.work) / "models"
    clock = Clock()
    trace = MemTrace() if args.mem_trace else None
    workers: dict[str, float] = {}
    with history_runner(engine_name, "local", engine, url) as runner:
        outcome = train(engine, models, TrainOptions(), progress=clock, runner=runner)
        if runner is not None:
            client = runner.client  # type: ignore[attr-defined]
            workers = {w: round(v, 1) for w, v in client.run(_vm_hwm_mb).items()}
    phases = clock.done()
    highs = trace.done() if trace is not None else []
    model = outcome.backtest
    return {
        **({"memory_highs": highs} if highs else {}),
        "case": f"train/{engine_name}",
        "version": outcome.version,
        "seconds": round(clock.last - clock.t0, 1),
        "phases": phases,
        "phase_peak_rss_mb": clock.peaks,
        "champion": outcome.champion_model,
        "scores": {n: model.reports[n]["overall"].get("rmsse") for n in model.ranking},
        "wape": {n: model.reports[n]["overall"].get("wape") for n in model.ranking},
        # VmHWM restarts at each phase: the run's peak is the highest phase's.
        "peak_rss_mb": round(max([peak_rss_mb(), *clock.peaks.values()]), 1),
        "worker_peak_rss_mb": workers,
    }


def _forecast(args: argparse.Namespace, engine_name: str) -> dict[str, Any]:
    from featurestore.db import make_engine
    from training.bundle import load_bundle
    from training.engine.select import batch_forecaster

    url = _db_url(args)
    engine = make_engine(url)
    models = Path(args.work) / "models"
    bundle = load_bundle(models / args.version, models_dir=models)
    with batch_forecaster(engine_name, "local", url) as forecast:
        t0 = time.perf_counter()
        frame = forecast(engine, bundle, quantiles=[0.1, 0.5, 0.9])
        seconds = time.perf_counter() - t0
    frame.to_parquet(Path(args.work) / f"forecast-{engine_name}.parquet", index=False)
    return {
        "case": f"forecast-all/{engine_name}",
        "seconds": round(seconds, 1),
        "rows": len(frame),
        "skus": int(frame["sku"].nunique()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def child_export(args: argparse.Namespace) -> dict[str, Any]:
    """The store's rows as the peers' long frame (sku, date, y, price, category, store)."""
    from featurestore.db import make_engine
    from featurestore.readers import read_frame, read_products

    out = Path(args.work) / "peers.parquet"
    if out.exists():
        return {"case": "export", "path": str(out), "reused": True}
    t0 = time.perf_counter()
    engine = make_engine(_db_url(args))
    history = read_frame(engine)[["sku", "date", "units", "price"]]
    attrs = read_products(engine).set_index("sku")[["category", "store"]]
    peers = history.rename(columns={"units": "y"}).join(attrs, on="sku")
    del history
    peers.to_parquet(out, index=False)
    return {"case": "export", "rows": len(peers), "seconds": round(time.perf_counter() - t0, 1)}


def run_mlforecast(args: argparse.Namespace) -> dict[str, Any]:
    """mlforecast + LightGBM (bench/peers.py's frame case: fit on every day but the last 28,
    forecast them) on the same rows, in its own interpreter, stopped at ``--peer-timeout``;
    its peak memory sampled from /proc every second, so a stopped run still has one."""
    import subprocess

    data = Path(args.work) / "peers.parquet"
    cmd = [args.peer_python, str(BENCH / "peers.py"), "frame", "--data", str(data)]
    cmd += ["--trees", "500", "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="passive")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    peak = 0.0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None and time.perf_counter() - t0 < args.peer_timeout:
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        time.sleep(1.0)
    finished = proc.poll() is not None
    if not finished:
        proc.kill()
    out, _ = proc.communicate()
    result: dict[str, Any] = {
        "case": "mlforecast",
        "finished": finished and proc.returncode == 0,
        "seconds": round(time.perf_counter() - t0, 1),
        "timeout_seconds": args.peer_timeout,
        "peak_rss_mb": round(peak, 1),
        "load_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    lines = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
    if finished and lines:
        result["result"] = json.loads(lines[-1])
    print(f"[bench/scale] mlforecast: {json.dumps(result)[:400]}", file=sys.stderr, flush=True)
    return result


CHILDREN = {
    "prepare": child_prepare,
    "export": child_export,
    "train-local": lambda a: _train(a, "local"),
    "train-dask": lambda a: _train(a, "dask"),
    "forecast-local": lambda a: _forecast(a, "local"),
    "forecast-dask": lambda a: _forecast(a, "dask"),
}


# ---------------------------------------------------------------- parent


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    me = [sys.executable, str(Path(__file__).resolve())]
    size = ["--skus", str(args.skus), "--days", str(args.days), "--work", args.work]
    results = [
        spawn(
            [*me, "--child", "prepare", *size, *(["--fresh"] if args.fresh else [])],
            args.threads,
            "prepare",
        )
    ]
    if args.mlforecast:
        results.append(spawn([*me, "--child", "export", *size], args.threads, "export"))
        results.append(run_mlforecast(args))
    trained: dict[str, str] = {}
    for engine in [e for e in args.engines.split(",") if e]:
        trace = ["--mem-trace"] if args.mem_trace else []
        cmd = [*me, "--child", f"train-{engine}", *size, *trace]
        r = spawn(cmd, args.threads, f"train {engine}")
        trained[engine] = r["version"]
        results.append(r)
    version = trained.get("local") or next(iter(trained.values()), "")
    for engine in [e for e in args.engines.split(",") if e and trained]:
        cmd = [*me, "--child", f"forecast-{engine}", *size, "--version", version]
        results.append(spawn(cmd, args.threads, f"forecast-all {engine}"))
    if {"local", "dask"} <= set(args.engines.split(",")):
        import pandas as pd

        a = pd.read_parquet(Path(args.work) / "forecast-local.parquet")
        b = pd.read_parquet(Path(args.work) / "forecast-dask.parquet")
        num = a.select_dtypes("number").columns
        results.append(
            {
                "case": "forecast-all/equal",
                "same_rows": bool(a[["sku", "date"]].equals(b[["sku", "date"]])),
                "max_abs_diff": float((a[num] - b[num]).abs().max().max()),
            }
        )
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skus", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=1_941)
    parser.add_argument("--engines", default="local,dask")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fresh", action="store_true", help="Rebuild the database")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "salesfc-scale"))
    parser.add_argument(
        "--mlforecast", action="store_true", help="also mlforecast on the same rows (peers venv)"
    )
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--peer-timeout", type=float, default=1200.0, help="seconds (20 min)")
    parser.add_argument(
        "--mem-trace", action="store_true", help="the training's memory highs with their stacks"
    )
    parser.add_argument("--child")
    parser.add_argument("--version")
    args = parser.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.child:
        emit(CHILDREN[args.child](args))
        return 0
    results = run(args)
    print(json.dumps({"machine": machine(), "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
