"""`salesfc serve --workers 2` as operators run it: every worker picks up a promotion.

A real uvicorn server with two worker processes; the test tells the workers apart by the pid in
their JSON log lines. Before the promotion both workers answer with the first champion; after
it, every answer comes from the new one, and each worker logs loading it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from featurestore.readers import read_products
from tests.app.conftest import OPS_KEY, READ_KEY, Served, small_options
from training.pipeline import train
from training.registry import Registry

REPO = Path(__file__).resolve().parents[2]
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"X-API-Key": READ_KEY})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # a new connection each
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _log_lines(path: Path, start: int = 0) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines()[start:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # uvicorn's own start-up lines
        if isinstance(record, dict):
            out.append(record)
    return out


def test_every_worker_picks_up_a_promotion(served: Served, tmp_path: Path) -> None:
    models_dir = served.settings.models_dir
    first = Registry(models_dir).champion()
    challenger = train(served.engine, models_dir, small_options()).version
    assert challenger != first
    products = read_products(served.engine)
    skus = products.loc[products["status"] == "active", "sku"].astype(str).tolist()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SALESFC_DATABASE_URL": served.settings.database_url,
        "SALESFC_MODELS_DIR": str(models_dir),
        "SALESFC_READ_API_KEYS": json.dumps([READ_KEY]),
        "SALESFC_OPS_API_KEYS": json.dumps([OPS_KEY]),
        "SALESFC_MAX_HORIZON": "14",
        "SALESFC_LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "app.cli", "serve", "--workers", str(WORKERS)),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if _get(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.3)

        def burst(since: int) -> tuple[list[str], set[int]]:
            """Concurrent requests on fresh connections until both workers have answered."""
            versions: list[str] = []
            for _ in range(40):
                with ThreadPoolExecutor(8) as pool:
                    urls = [f"{base}/v1/forecast/{sku}?horizon=7" for sku in skus[:16]]
                    for status, body in pool.map(_get, urls):
                        assert status == 200, body
                        versions.append(body["model_version"])
                pids = {
                    r["pid"]
                    for r in _log_lines(log_path, since)
                    if r.get("event") == "request" and "pid" in r
                }
                if len(pids) >= WORKERS:
                    return versions, pids
            raise AssertionError(f"only workers {pids} answered: {log_path.read_text()[-2000:]}")

        versions, pids = burst(0)
        assert set(versions) == {first}
        assert len(pids) == WORKERS

        mark = len(log_path.read_text(errors="replace").splitlines())
        Registry(models_dir).promote(challenger, reason="multi-worker test")
        versions, pids = burst(mark)
        assert set(versions) == {challenger}, "a worker answered from the old champion"
        loaded = {
            r["pid"]
            for r in _log_lines(log_path, mark)
            if r.get("event") == "champion_loaded" and r.get("version") == challenger
        }
        assert loaded == pids and len(loaded) == WORKERS
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
