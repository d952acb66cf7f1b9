"""Retrain jobs, the champion/challenger gate, rollback and hot swap under load."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from featurestore import jobs
from featurestore.readers import read_products
from tests.app.conftest import OPS_KEY, Served

RETRAIN = {
    "models": ["seasonal_naive", "lgbm_tweedie"],
    "folds": 1,
    "horizon": 14,
    "n_estimators": 20,
}


def _wait(client: TestClient, job_id: str, until: set[str], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in until:
            return body
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never reached {until}: {body}")


def test_retrain_gate_and_single_active_job(client: TestClient, served: Served) -> None:
    before = served.registry.champion()
    started = client.post("/v1/retrain", json=RETRAIN, headers={"X-API-Key": OPS_KEY})
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["Location"] == f"/v1/jobs/{job['id']}"
    second = client.post("/v1/retrain", json=RETRAIN, headers={"X-API-Key": OPS_KEY})
    assert second.status_code == 409
    assert job["id"] in second.json()["detail"]
    done = _wait(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["champion_before"] == before
    assert result["challenger_score"] is not None and result["champion_score"] is not None
    better = result["challenger_score"] < result["champion_score"]
    assert result["promoted"] is better
    assert served.registry.champion() == (result["challenger"] if better else before)
    # the fixture's champion was scored by rmsse on the same single fold: its score is reused
    assert result["champion_scored"] == "stored" and result["refused"] is None
    assert result["metric"] == "rmsse" and result["folds"] == 1 and len(result["cutoffs"]) == 1
    assert result["decision"] in done["message"]
    # forced, on another metric: the champion is re-backtested by it, then promoted regardless
    forced = client.post(
        "/v1/retrain",
        json={**RETRAIN, "force": True, "metric": "wape"},
        headers={"X-API-Key": OPS_KEY},
    ).json()
    done = _wait(client, forced["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["promoted"] is True and result["forced"] is True
    assert result["champion_before"] == before and result["metric"] == "wape"
    assert result["champion_scored"] == "re-backtested" and result["champion_score"] is not None
    manifest = served.registry.get(result["challenger"]).metrics["promotion"]
    assert manifest["champion_score"] == result["champion_score"]
    assert manifest["cutoffs"] == result["cutoffs"]
    assert served.registry.champion() == result["challenger"]
    # put the fixture's champion back for the other tests
    served.registry.promote(before, reason="test cleanup")


def test_killed_worker_fails_the_job_and_keeps_the_champion(
    client: TestClient, served: Served
) -> None:
    before = served.registry.champion()
    job = client.post("/v1/retrain", json=RETRAIN, headers={"X-API-Key": OPS_KEY}).json()
    running = _wait(client, job["id"], {"running", "succeeded", "failed"})
    assert running["status"] == "running"
    state = jobs.get_job(served.engine, job["id"])
    assert state.pid is not None
    os.kill(state.pid, signal.SIGKILL)
    failed = _wait(client, job["id"], {"failed", "succeeded"}, timeout=30)
    assert failed["status"] == "failed"
    assert "worker stopped" in failed["message"]
    assert served.registry.champion() == before
    again = client.post("/v1/retrain", json=RETRAIN, headers={"X-API-Key": OPS_KEY})
    assert again.status_code == 202
    assert _wait(client, again.json()["id"], {"succeeded", "failed"})["status"] == "succeeded"
    served.registry.promote(before, reason="test cleanup")


def test_retrain_refuses_unknown_models_and_metrics_up_front(
    client: TestClient, served: Served
) -> None:
    """Issue #11: {"models": ["nope"], "metric": "garbage"} answered 202 and the job failed."""
    queued = len(jobs.list_jobs(served.engine))
    bad = {"models": ["nope"], "metric": "garbage"}
    response = client.post("/v1/retrain", json=bad, headers={"X-API-Key": OPS_KEY})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_request"
    fields = {e["loc"][-1]: e["msg"] for e in response.json()["detail"]}
    assert "unknown model(s) nope" in fields["models"]
    assert "metric 'garbage' cannot rank models" in fields["metric"]
    r2 = client.post("/v1/retrain", json={"metric": "r2"}, headers={"X-API-Key": OPS_KEY})
    assert r2.status_code == 422 and "metric 'r2' cannot rank models" in r2.text
    floors = {"lag_floors": [1, 14, 35], "horizon": 28}
    r3 = client.post("/v1/retrain", json=floors, headers={"X-API-Key": OPS_KEY})
    assert r3.status_code == 422 and "between 1 and the horizon (28)" in r3.text
    assert len(jobs.list_jobs(served.engine)) == queued


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/v1/jobs/no-such-job")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_registry_routes(client: TestClient, served: Served) -> None:
    listing = client.get("/v1/models").json()
    assert listing["champion"] == served.registry.champion()
    assert any(m["champion"] for m in listing["models"])
    version = listing["models"][0]["version"]
    manifest = client.get(f"/v1/models/{version}").json()
    assert manifest["version"] == version and manifest["features"]
    assert client.get("/v1/models/19990101T000000Z-0000").status_code == 404
    missing = client.post(
        "/v1/models/19990101T000000Z-0000/promote", headers={"X-API-Key": OPS_KEY}
    )
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_model_version"


def test_hot_swap_under_concurrent_requests(client: TestClient, served: Served) -> None:
    """Promote and roll back while requests run: none fails, each names a real version."""
    versions = [m.version for m in served.registry.versions()]
    before = served.registry.champion()
    other = next((v for v in versions if v != before), None)
    if other is None:
        from tests.app.conftest import small_options
        from training.pipeline import train

        other = train(served.engine, served.settings.models_dir, small_options()).version
    products = read_products(served.engine)
    skus = sorted(products.loc[products["status"] == "active", "sku"])[:4]
    errors: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            for sku in skus:
                r = client.get(f"/v1/forecast/{sku}", params={"horizon": 7})
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    seen.add(r.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            assert (
                client.post(
                    f"/v1/models/{other}/promote", headers={"X-API-Key": OPS_KEY}
                ).status_code
                == 200
            )
            time.sleep(0.3)
            assert (
                client.post("/v1/models/rollback", headers={"X-API-Key": OPS_KEY}).status_code
                == 200
            )
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert seen == {before, other}
    assert served.registry.champion() == before


def test_broken_bundle_is_refused_and_champion_keeps_serving(
    client: TestClient, served: Served
) -> None:
    from tests.app.conftest import small_options
    from training.pipeline import train

    outcome = train(served.engine, served.settings.models_dir, small_options())
    artifact = outcome.path / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"0123456789")
    response = client.post(f"/v1/models/{outcome.version}/promote", headers={"X-API-Key": OPS_KEY})
    assert response.status_code == 409
    assert "checksum" in response.json()["detail"].lower()
    products = read_products(served.engine)
    sku = sorted(products.loc[products["status"] == "active", "sku"])[0]
    served_by = client.get(f"/v1/forecast/{sku}").json()["model_version"]
    assert served_by == served.registry.champion() != outcome.version


class _FakeProc:
    def wait(self) -> int:
        return 0


def test_worker_gets_passive_openmp_unless_set(monkeypatch: Any) -> None:
    """LightGBM in the worker must not spin-wait (OMP_WAIT_POLICY), an explicit value wins."""
    import subprocess

    from app import jobs as app_jobs
    from featurestore.config import Settings

    seen: list[dict[str, str]] = []

    def popen(cmd: list[str], **kwargs: Any) -> _FakeProc:
        seen.append(kwargs["env"])
        return _FakeProc()

    monkeypatch.setattr(subprocess, "Popen", popen)
    settings = Settings(database_url="sqlite:///unused.db")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    app_jobs.spawn_worker("job-1", settings)
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    app_jobs.spawn_worker("job-2", settings)
    assert [env.get("OMP_WAIT_POLICY") for env in seen] == ["passive", "active"]


def test_retrain_request_defaults_are_the_training_defaults() -> None:
    """The API's defaults come from TrainOptions; the worker builds its options like the CLI."""
    from app.schemas import RetrainRequest
    from training.options import TrainOptions, train_options

    params = RetrainRequest().model_dump(mode="json")
    params.pop("force")
    assert train_options(params) == TrainOptions()
    assert train_options({"strategy": "recursive"}).strategy == "recursive"
