"""Soak benchmark: mixed traffic for minutes at ~80% of the measured peak, with 2 workers.

Sets up the serving benchmark's store (bench/serve.py: a temporary PostgreSQL database, m5_tiny
or a synthetic catalogue, a champion and a forecast-all run), starts `salesfc serve`, measures
the peak of the mix with wrk, then runs the mix in consecutive wrk windows at ~80% of it (a Lua
delay per connection) with a retrain (a third of the way in by default) and a promote back to the
first champion (two thirds in, or when the retrain ends if later). Per window: requests/s,
p50/p99, errors and each worker's memory (RSS); memory is judged after the last bundle swap.
Loopback only; bounded in time; the database is dropped at the end. Figures:
docs/benchmarks.md, Soak.

    .venv/bin/python bench/soak.py --minutes 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import psutil  # noqa: E402
import serve  # noqa: E402  (bench/serve.py: set-up, wrk and machine helpers)

OPS_KEY = "soak-ops-key"
EXPORT_PAGE = 100
BATCH = 100
# The mix, by share of requests: cached single-SKU forecasts, computed ones (what-if scenarios
# are never cached), 100-SKU batches and export pages.
MIX = {"cached": 70, "computed": 10, "batch": 10, "export": 10}
CONNECTIONS = 16
JOBS: list[str] = []  # retrain jobs started, whose worker process is ended with the soak
# The retrain under load: one family, fewer trees than the champion, so that it ends (and is
# promoted) well within the soak; force promotes it whatever its score.
RETRAIN = {"models": ["lgbm_tweedie"], "folds": 1, "n_estimators": 100, "force": True}


@dataclass
class Window:
    """One wrk window of the soak."""

    start_s: float
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    rss_mb: list[float]
    event: str


def _request(
    method: str, url: str, body: Any = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("X-API-Key", OPS_KEY)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), dict(exc.headers), exc.read()


@contextlib.contextmanager
def server(setup: serve.Setup, work: Path, workers: int) -> Iterator[tuple[str, int]]:
    """`salesfc serve` with an ops key (for the retrain and the promote); yields URL and pid."""
    port = serve.free_port()
    env = dict(os.environ)
    env.update(
        SALESFC_DATABASE_URL=setup.url,
        SALESFC_MODELS_DIR=str(setup.models_dir),
        SALESFC_READ_API_KEYS="[]",
        SALESFC_OPS_API_KEYS=json.dumps([OPS_KEY]),
        SALESFC_LOG_LEVEL="WARNING",
    )
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers)]
    logfile = work / "server_soak.log"
    with logfile.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, cwd=serve.ROOT, env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited ({proc.returncode}); see {logfile}")
            with contextlib.suppress(OSError):
                if _request("GET", base + "/readyz", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 180 s; see {logfile}")
            time.sleep(0.25)
        yield base, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def worker_rss_mb(pid: int) -> list[float]:
    """Resident memory of each uvicorn worker (the server's spawned children)."""
    out = []
    for child in psutil.Process(pid).children(recursive=False):
        with contextlib.suppress(psutil.Error):
            if "spawn_main" in " ".join(child.cmdline()):  # not the resource tracker
                out.append(round(child.memory_info().rss / 2**20, 1))
    return sorted(out)


def end_retrain_workers() -> None:
    """End a retrain worker still running (it runs detached from the server)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if len(cmd) >= 2 and cmd[-2] == "worker" and cmd[-1] in JOBS:
            with contextlib.suppress(psutil.Error):
                proc.terminate()


def export_pages(base: str) -> list[str]:
    """Every page of the stored run's export (its cursors read once before the load)."""
    pages, cursor = [], None
    while True:
        path = f"/v1/forecasts?limit={EXPORT_PAGE}" + (f"&cursor={cursor}" if cursor else "")
        status, headers, _ = _request("GET", base + path)
        if status != 200:
            raise RuntimeError(f"export page: status {status}")
        pages.append(path)
        cursor = headers.get("X-Next-Cursor") or headers.get("x-next-cursor")
        if not cursor:
            return pages


def write_script(work: Path, setup: serve.Setup, pages: list[str], delay_ms: float) -> Path:
    """A wrk Lua script drawing each request from the mix (deterministic, by request count)."""
    singles = setup.single_skus
    cached = [serve.forecast_path(s) for s in singles]
    start = setup.as_of.toordinal()
    whatifs = [
        json.dumps(
            {
                "skus": [sku],
                "horizon": serve.HORIZON,
                "scenario": {
                    "promotions": [
                        {
                            "sku": sku,
                            "start": _iso(start + 1 + i % 7),
                            "end": _iso(start + 8 + i % 7),
                            "depth": 0.1 + (i % 4) / 10,
                        }
                    ]
                },
            }
        )
        for i, sku in enumerate(singles[:200])
    ]
    batches = [
        json.dumps({"skus": setup.batch_skus[i : i + BATCH], "horizon": serve.HORIZON})
        for i in range(0, len(setup.batch_skus) - BATCH + 1, BATCH)
    ]
    slots = [kind for kind, share in MIX.items() for _ in range(share)]
    lua = [
        f"local cached = {{{','.join(json.dumps(p) for p in cached)}}}",
        f"local whatifs = {{{','.join(json.dumps(b) for b in whatifs)}}}",
        f"local batches = {{{','.join(json.dumps(b) for b in batches)}}}",
        f"local pages = {{{','.join(json.dumps(p) for p in pages)}}}",
        f"local slots = {{{','.join(json.dumps(s) for s in slots)}}}",
        "local i = 0",
        f"wrk.headers['X-API-Key'] = {json.dumps(OPS_KEY)}",
        "local json_headers = {['Content-Type'] = 'application/json', "
        f"['X-API-Key'] = {json.dumps(OPS_KEY)}}}",
        "local function pick(list) return list[(i % #list) + 1] end",
        "request = function()",
        "  i = i + 1",
        "  local kind = slots[((i * 37) % #slots) + 1]",
        "  if kind == 'cached' then return wrk.format('GET', pick(cached)) end",
        "  if kind == 'export' then return wrk.format('GET', pick(pages)) end",
        "  if kind == 'computed' then",
        "    return wrk.format('POST', '/v1/forecast', json_headers, pick(whatifs))",
        "  end",
        "  return wrk.format('POST', '/v1/forecast', json_headers, pick(batches))",
        "end",
    ]
    if delay_ms > 0:
        lua.append(f"delay = function() return {delay_ms:.1f} end")
    script = work / f"soak_{round(delay_ms)}.lua"
    script.write_text("\n".join(lua) + "\n" + serve.LUA_DONE)
    return script


def _iso(ordinal: int) -> str:
    import datetime as dt

    return dt.date.fromordinal(ordinal).isoformat()


@dataclass
class Event:
    """Something the operator thread did, at ``at_s`` seconds into the soak."""

    at_s: float
    text: str
    swap: bool  # the champion changed: the workers load another bundle

    def __str__(self) -> str:
        return f"{self.at_s:.0f}s {self.text}"


def ops(base: str, setup: serve.Setup, at: dict[str, float], log: list[Event]) -> None:
    """A retrain at ``at['retrain']`` seconds (waited for) and a promote at ``at['promote']``."""
    t0 = time.monotonic()
    time.sleep(at["retrain"])
    status, _, raw = _request("POST", base + "/v1/retrain", RETRAIN)
    job = json.loads(raw)
    JOBS.append(str(job.get("id")))
    log.append(Event(time.monotonic() - t0, f"retrain queued ({status})", swap=False))
    # Waited for even past the promote time: its own promote must come before ours, or the
    # swap after the measured stretch would go unrecorded.
    while True:
        time.sleep(2)
        _, _, raw = _request("GET", base + f"/v1/jobs/{job['id']}")
        state = json.loads(raw)
        if state.get("status") in {"succeeded", "failed"}:
            # force: a retrain that succeeded promoted its bundle.
            done = state["status"] == "succeeded"
            log.append(Event(time.monotonic() - t0, f"retrain {state['status']}", swap=done))
            break
    time.sleep(max(0.0, at["promote"] - (time.monotonic() - t0)))
    # The retrain promoted its bundle (force): promote the first champion back, an explicit
    # promote under load as an operator would roll forward or back.
    status, _, raw = _request("POST", base + f"/v1/models/{setup.version}/promote")
    log.append(Event(time.monotonic() - t0, f"promote back to the first champion: {status}", True))


def memory_verdict(windows: list[Window], events: list[Event]) -> dict[str, Any]:
    """Worker RSS over the stretch after the last bundle swap (one window to settle).

    A swap loads another bundle and refills the caches, so memory may step once; flat means
    no growth after that step: the last window's RSS minus the settled window's, per worker.
    """
    swaps = [e.at_s for e in events if e.swap]
    since = max(swaps, default=0.0)
    after = [w for w in windows if w.start_s >= since]
    steady = after[1:] if len(after) > 2 else after
    if len(steady) < 2:
        return {"since_s": since, "minutes": 0.0, "growth_mb": [], "flat": None}
    first, last = steady[0], steady[-1]
    minutes = (last.start_s - first.start_s) / 60
    growth = [round(b - a, 1) for a, b in zip(first.rss_mb, last.rss_mb, strict=False)]
    peak = [max(w.rss_mb[i] for w in steady) for i in range(len(first.rss_mb))]
    return {
        "since_s": round(first.start_s),
        "minutes": round(minutes, 1),
        "settled_mb": first.rss_mb,
        "last_mb": last.rss_mb,
        "peak_mb": peak,
        "growth_mb": growth,
        # Flat: within 2% of the settled size (allocator noise), never a steady climb.
        "flat": all(g <= 0.02 * a for g, a in zip(growth, first.rss_mb, strict=False)),
    }


def soak(base: str, pid: int, script: Path, seconds: float, window: float) -> list[Window]:
    """Consecutive wrk windows until ``seconds`` have passed."""
    windows: list[Window] = []
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds - 1:
        length = min(window, seconds - elapsed)
        fig = serve.wrk(base + "/", script, CONNECTIONS, length, timeout=30)
        errors = fig["connect"] + fig["read"] + fig["write"] + fig["status"] + fig["timeout"]
        windows.append(
            Window(
                start_s=round(elapsed),
                requests=fig["requests"],
                rps=round(fig["requests"] / (fig["duration_us"] / 1e6), 1),
                p50_ms=round(fig["p50_us"] / 1000, 2),
                p99_ms=round(fig["p99_us"] / 1000, 2),
                max_ms=round(fig["max_us"] / 1000, 1),
                errors=errors,
                rss_mb=worker_rss_mb(pid),
                event="",
            )
        )
        serve.log(f"window {asdict(windows[-1])}")
    return windows


def render(
    args: argparse.Namespace,
    setup: serve.Setup,
    peak: dict[str, Any],
    target: float,
    windows: list[Window],
    events: list[Event],
    load: tuple[float, float],
) -> str:
    total = sum(w.requests for w in windows)
    errors = sum(w.errors for w in windows)
    rss0, rss1 = windows[0].rss_mb, windows[-1].rss_mb
    verdict = memory_verdict(windows, events)
    for w in windows:
        w.event = "; ".join(
            e.text for e in events if w.start_s <= e.at_s < w.start_s + args.window + 1
        )
    peak_rps = peak["requests"] / (peak["duration_us"] / 1e6)
    lines = [
        "## Soak",
        "",
        f"`.venv/bin/python bench/soak.py --minutes {args.minutes:g} --retrain-at "
        f"{args.retrain_at:.2g} --promote-at {args.promote_at:.2g}` ({serve.dt.date.today()}): "
        f"2 workers, wrk with {CONNECTIONS} connections, the mix "
        + ", ".join(f"{k} {v}%" for k, v in MIX.items())
        + f" (cached: single-SKU GETs of the stored run; computed: what-if POSTs; batch: "
        f"{BATCH} SKUs; export: pages of {EXPORT_PAGE} SKUs). Store: {setup.data['skus']} SKUs "
        f"({setup.data['source']}). Peak of the mix {peak_rps:,.0f} req/s (p99 "
        f"{peak['p99_us'] / 1000:.1f} ms); the soak aims at 80% ({target:,.0f} req/s) with a "
        "per-connection delay. A retrain (force: its bundle is promoted when it ends) starts at "
        f"{args.retrain_at:.0%} of the soak and the first champion is promoted back at "
        f"{args.promote_at:.0%}.",
        "",
        "| from s | requests | req/s | p50 ms | p99 ms | max ms | errors | RSS per worker MB "
        "| event |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for w in windows:
        rss = " / ".join(f"{r:.0f}" for r in w.rss_mb)
        lines.append(
            f"| {w.start_s} | {w.requests:,} | {w.rps:,.1f} | {w.p50_ms:.2f} | {w.p99_ms:.2f} "
            f"| {w.max_ms:.1f} | {w.errors} | {rss} | {w.event} |"
        )
    lines += [
        "",
        f"Totals: {total:,} requests, {errors} errors (target 0). Worker RSS first window "
        f"{' / '.join(f'{r:.0f}' for r in rss0)} MB, last {' / '.join(f'{r:.0f}' for r in rss1)} "
        "MB.",
        "Memory after the last bundle swap (from the window after it, "
        f"{verdict['minutes']:g} minutes): "
        + (
            "too short to judge."
            if verdict["flat"] is None
            else f"{' / '.join(f'{r:.0f}' for r in verdict['settled_mb'])} MB settled, "
            f"{' / '.join(f'{r:.0f}' for r in verdict['last_mb'])} MB last, growth "
            f"{' / '.join(f'{g:+.1f}' for g in verdict['growth_mb'])} MB: "
            + ("**flat** (within 2%)." if verdict["flat"] else "**growing** (more than 2%).")
        ),
        "Events: " + "; ".join(str(e) for e in events) + ".",
        "",
        f"Machine: {', '.join(f'{k} {v}' for k, v in serve.machine().items())}; load average "
        f"(1 min) before / after {load[0]:.2f} / {load[1]:.2f} (a machine shared with other "
        "work: the figures are lower bounds).",
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str, doc: Path = serve.DOC) -> None:
    """Replace (or add) the '## Soak' section, leaving the other sections alone."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"^## Soak\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per wrk window")
    parser.add_argument("--peak-seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bundle-cache", type=Path, help="reuse/keep the champion here")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument(
        "--retrain-at", type=float, default=1 / 3, help="share of the soak when the retrain starts"
    )
    parser.add_argument(
        "--promote-at", type=float, default=2 / 3, help="share of the soak of the promote back"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.retrain_at < args.promote_at < 1:
        parser.error("need 0 <= --retrain-at < --promote-at < 1")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found (apt-get install wrk)")
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="salesfc_soak_"))
    serve.log(f"work directory {work}; load average {load_before:.2f}")
    setup = serve.prepare(work, args.bundle_cache)
    try:
        with server(setup, work, args.workers) as (base, pid):
            pages = export_pages(base)
            # Warm-up (not measured): each worker reads its catalogue window and snapshot.
            serve.wrk(base + "/", write_script(work, setup, pages, 0), CONNECTIONS, 15, 30)
            peak = serve.wrk(
                base + "/", write_script(work, setup, pages, 0), CONNECTIONS, args.peak_seconds, 30
            )
            peak_rps = peak["requests"] / (peak["duration_us"] / 1e6)
            target = 0.8 * peak_rps
            # Each connection's cycle at the peak is CONNECTIONS / peak; stretched to 1 / 0.8 of it.
            delay_ms = 1000 * CONNECTIONS * (1 / target - 1 / peak_rps)
            serve.log(f"peak {peak_rps:.0f} req/s; soaking at ~{target:.0f} (delay {delay_ms:.1f})")
            seconds = args.minutes * 60
            events: list[Event] = []
            at = {"retrain": seconds * args.retrain_at, "promote": seconds * args.promote_at}
            operator = threading.Thread(target=ops, args=(base, setup, at, events), daemon=True)
            operator.start()
            windows = soak(
                base, pid, write_script(work, setup, pages, delay_ms), seconds, args.window
            )
            operator.join(timeout=5)
        section = render(
            args, setup, peak, target, windows, events, (load_before, os.getloadavg()[0])
        )
        print(section)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "peak": peak,
                        "windows": [asdict(w) for w in windows],
                        "events": [asdict(e) for e in events],
                        "memory": memory_verdict(windows, events),
                    }
                )
            )
        if not args.no_doc:
            write_section(section)
    finally:
        end_retrain_workers()
        serve.drop_database(setup.database)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
