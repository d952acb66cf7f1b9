"""Ingestion benchmark: rows/s and peak memory on SQLite and PostgreSQL -> docs/benchmarks.md.

Cases, each timed in a fresh subprocess so its peak RSS is that case alone:
  m5      featurestore.ingest.import_m5 on ../shared/data/m5_tiny/tiny_m5.parquet
  orders  featurestore.ingest.ingest_file("orders", ...) on N synthetic order lines (default 5M),
          written to a Parquet file first (not timed) by training.synth.iter_order_lines

Usage: python bench/ingest.py [--quick] [--backend sqlite|postgresql|both] [--orders N]
                              [--profile DIR] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peers import peak_rss_mb  # noqa: E402

M5_TINY = ROOT.parent / "shared" / "data" / "m5_tiny" / "tiny_m5.parquet"
PG_ADMIN_URL = os.environ.get(
    "SALESFC_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DOC = ROOT / "docs" / "benchmarks.md"
ORDER_SKUS = 1_000
ORDER_DAYS = 365
TARGETS = {
    "m5": "< 15 s",
    "orders": ">= 200,000 rows/s and < 1 GiB peak (PostgreSQL)",
}


# ---------------------------------------------------------------- child: one timed case


def run_case(case: str, url: str, path: Path, profile: Path | None) -> dict[str, Any]:
    """Time one case in this (fresh) process; return its figures."""
    from featurestore.db import make_engine
    from featurestore.ingest import import_m5, ingest_file

    engine = make_engine(url)
    baseline_mib = peak_rss_mb()
    profiler = None
    statements: list[tuple[float, str]] = []
    _time_statements(engine, statements)  # a few dozen statements: no measurable cost
    if profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if case == "m5":
        reports = import_m5(engine, path)
        rows = sum(r.rows_accepted for r in reports.values())
        detail = {k: r.rows_accepted for k, r in reports.items()}
        main_rows = reports["sales"].rows_accepted if "sales" in reports else rows
    else:
        report = ingest_file(engine, "orders", path)
        rows = main_rows = report.rows_accepted
        detail = {"orders": report.rows_accepted, "rejected": report.rows_rejected}
    seconds = time.perf_counter() - started
    done = resource.getrusage(resource.RUSAGE_SELF)
    cpu = done.ru_utime - usage.ru_utime + done.ru_stime - usage.ru_stime
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    engine.dispose()
    return {
        "case": case,
        "rows": rows,
        "main_rows": main_rows,
        "detail": detail,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "statement_seconds": sum(took for took, _ in statements),
        "peak_rss_mib": peak_rss_mb(),
        "baseline_rss_mib": baseline_mib,
        "slowest_statements": sorted(statements, reverse=True)[:8],
        "timeline": statements,
    }


def _time_statements(engine: Any, into: list[tuple[float, str]]) -> None:
    """Record each SQL statement's duration (COPY through the raw driver is not seen)."""
    from sqlalchemy import event

    def before(conn: Any, *_args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        took = time.perf_counter() - conn.info["bench_started"].pop()
        into.append((round(took, 3), " ".join(statement.split())[:200]))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)


# ---------------------------------------------------------------- parent: set-up and report


def make_orders_file(path: Path, n_lines: int) -> list[str]:
    """Write n_lines synthetic order lines to Parquet (streamed); return the SKUs they use."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.synth import iter_order_lines

    skus = [f"BENCH_{i:05d}" for i in range(ORDER_SKUS)]
    end = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    start = end - dt.timedelta(days=ORDER_DAYS - 1)
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in iter_order_lines(n_lines, seed=42, skus=skus, start=start, end=end):
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    return skus


def load_products(url: str, skus: list[str]) -> None:
    """The order lines' SKUs must exist (untimed)."""
    import pandas as pd

    from featurestore.db import make_engine
    from featurestore.ingest import ingest_frames

    frame = pd.DataFrame({"sku": skus, "name": [f"bench product {s}" for s in skus]})
    engine = make_engine(url)
    try:
        ingest_frames(engine, "products", [frame], source="bench:products")
    finally:
        engine.dispose()


class Database:
    """A fresh, migrated feature store on one backend; dropped afterwards."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.url = ""

    def __enter__(self) -> Database:
        from featurestore import migrations

        if self.backend == "sqlite":
            path = self.workdir / f"bench_{uuid.uuid4().hex[:8]}.db"
            self.url = f"sqlite:///{path}"
        else:
            from sqlalchemy import create_engine, text

            name = f"salesfc_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        migrations.upgrade(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(self.url.split("///", 1)[1] + suffix).unlink(missing_ok=True)
            return
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(
                text(f'DROP DATABASE IF EXISTS "{self.url.rsplit("/", 1)[1]}" WITH (FORCE)')
            )
        admin.dispose()


def spawn(
    case: str, db: Database, path: Path, workdir: Path, profile: Path | None
) -> dict[str, Any]:
    """Run one case in a fresh interpreter and parse its JSON line."""
    env = dict(os.environ)
    env.update(
        SALESFC_DATABASE_URL=db.url,
        SALESFC_DATA_DIR=str(workdir / "data"),
        SALESFC_MODELS_DIR=str(workdir / "models"),
    )
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        case,
        "--url",
        db.url,
        "--path",
        str(path),
    ]
    if profile is not None:
        cmd += ["--profile-file", str(profile)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{case} on {db.backend} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(backend=db.backend, process_seconds=wall)
    return result


def pg_server_version() -> str:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL)
    try:
        with admin.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    except Exception as exc:  # report it, do not fail the summary
        return f"unreachable ({type(exc).__name__})"
    finally:
        admin.dispose()


def machine() -> dict[str, str]:
    """What ran the benchmark."""
    cpu = "unknown"
    meminfo = "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        cpu = match.group(1).strip() if match else platform.processor() or "unknown"
        kib = int(re.search(r"^MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text(), re.M)[1])  # type: ignore[index]
        meminfo = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, TypeError):
        pass
    return {
        "cpus (nproc)": str(os.cpu_count()),
        "memory": meminfo,
        "cpu": cpu,
        "os": platform.platform(),
        # other work on the machine slows every figure; say how busy it was
        "load average (1, 5, 15 min) at the end": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


def code_version() -> str:
    """The commit measured, and any uncommitted change to the code under test."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.rstrip("\n")

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "featurestore", "training/synth.py").splitlines()
    if dirty:
        sha += " with uncommitted changes to " + ", ".join(line[3:] for line in dirty)
    return sha


def versions() -> dict[str, str]:
    """Library and server versions that matter for ingestion speed."""
    out = {
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL server": pg_server_version(),
    }
    for dist in ("sqlalchemy", "psycopg", "pandas", "pyarrow", "numpy"):
        try:
            out[dist] = version(dist)
        except Exception:
            out[dist] = "not installed"
    return out


def render(results: list[dict[str, Any]], args: argparse.Namespace, code: str) -> str:
    """The Ingestion section of docs/benchmarks.md."""
    lines = [
        "## Ingestion",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with "
        f"`{' '.join(['python', 'bench/ingest.py', *args.argv])}`"
        + (" (quick sizes: not the targets' sizes)" if args.quick else "")
        + ".",
        "Each case runs in a fresh process on a fresh, migrated database (SQLite: a temp file; "
        "PostgreSQL: a temp database on 127.0.0.1, dropped afterwards). Peak RSS is the "
        "process's own maximum resident set, Python, pandas and the driver included; the "
        "PostgreSQL server's memory is not counted.",
        "",
        "| case | backend | rows | wall s | rows/s | client CPU s | peak RSS MiB | target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        label = "m5_tiny import" if r["case"] == "m5" else f"{r['main_rows']:,} order lines"
        rate = r["rows"] / r["seconds"] if r["seconds"] else float("nan")
        lines.append(
            f"| {label} | {r['backend']} | {r['rows']:,} | {r['seconds']:.1f} | {rate:,.0f} | "
            f"{r.get('cpu_seconds', float('nan')):.1f} | {r['peak_rss_mib']:,.0f} | "
            f"{TARGETS[r['case']]} |"
        )
    lines += [
        "",
        "m5_tiny rows are all accepted rows of every entity (products, daily sales, prices, "
        "events); order-line rows are the lines merged (daily sales are then derived from them "
        f"inside the same transaction). Order lines cover {ORDER_SKUS:,} SKUs over "
        f"{ORDER_DAYS} days. Client CPU is the benchmark process's user + system time (steadier "
        "than wall time on a shared machine); the database server's CPU is not in it.",
        "",
        *breakdown(results),
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()) + ".",
        "",
        "Versions: salesfc "
        + code
        + ", "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
        + ".",
        "",
    ]
    return "\n".join(lines)


def breakdown(results: list[dict[str, Any]]) -> list[str]:
    """Where the time of each order-line case goes: its SQL statements and the streaming."""
    lines: list[str] = []
    for r in results:
        if r["case"] != "orders" or "statement_seconds" not in r:
            continue
        streamed = r["seconds"] - r["statement_seconds"]
        lines += [
            f"Where the {r['main_rows']:,} order lines' {r['seconds']:.1f} s go on "
            f"{r['backend']} (statements of 0.1 s or more, in the order they ran):",
            "",
            "| step | s |",
            "|---|---:|",
            f"| checksum, read, validate and stream the lines (COPY; client and server overlap) | "
            f"{streamed:.1f} |",
        ]
        for took, statement in r["timeline"]:
            if took >= 0.1:
                lines.append(f"| `{statement[:90]}` | {took:.1f} |")
        lines.append("")
    return lines


def write_section(section: str, doc: Path = DOC) -> None:
    """Replace (or add) the '## Ingestion' section, leaving the other sections alone."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"^## Ingestion\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 order lines instead of 5M")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--orders", type=int, default=None, help="order lines (default 5M)")
    parser.add_argument("--cases", default="m5,orders", help="comma-separated: m5,orders")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats here")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument("--child", choices=("m5", "orders"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv

    if args.child:
        print(json.dumps(run_case(args.child, args.url, args.path, args.profile_file)))
        return 0

    code = code_version()  # before the run: the code measured, not what changed meanwhile
    n_orders = args.orders or (200_000 if args.quick else 5_000_000)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if "m5" in cases and not M5_TINY.exists():
        print(f"m5_tiny not found at {M5_TINY}: skipping that case", file=sys.stderr)
        cases.remove("m5")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="salesfc-bench-") as tmp:
        workdir = Path(tmp)
        orders_file = workdir / "orders.parquet"
        skus: list[str] = []
        if "orders" in cases:
            t = time.perf_counter()
            skus = make_orders_file(orders_file, n_orders)
            size = orders_file.stat().st_size / 2**20
            print(
                f"wrote {n_orders:,} order lines ({size:,.0f} MiB) in "
                f"{time.perf_counter() - t:.1f} s (not timed)",
                file=sys.stderr,
            )
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        for backend in backends:
            for case in cases:
                with Database(backend, workdir) as db:
                    if case == "orders":
                        load_products(db.url, skus)
                    path = M5_TINY if case == "m5" else orders_file
                    prof = args.profile / f"{case}_{backend}.prof" if args.profile else None
                    result = spawn(case, db, path, workdir, prof)
                results.append(result)
                rate = result["rows"] / result["seconds"]
                print(
                    f"{case:7s} {backend:10s} {result['rows']:>10,} rows "
                    f"{result['seconds']:7.1f} s {rate:>10,.0f} rows/s "
                    f"peak {result['peak_rss_mib']:,.0f} MiB",
                    file=sys.stderr,
                )
                for took, statement in result["slowest_statements"]:
                    print(f"    {took:8.3f} s  {statement}", file=sys.stderr)
    section = render(results, args, code)
    if args.no_write:
        print(section)
    else:
        write_section(section)
        print(f"wrote the Ingestion section of {DOC.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
