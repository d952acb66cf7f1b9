"""Registry: listing, the champion alias, promote / rollback, generation and concurrency."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LinearRegression

from training.bundle import MANIFEST_NAME, BundleNotFound, CorruptBundle, save_bundle
from training.registry import (
    ALIAS_NAME,
    AliasCorrupt,
    NoChampion,
    NoPreviousChampion,
    PromotionRefused,
    Registry,
    UnknownVersion,
)

REPO = Path(__file__).resolve().parents[2]


def make(models: Path, version: str, **metrics: float) -> str:
    fields: dict[str, Any] = {
        "data_start": "2015-01-01",
        "data_end": "2016-04-24",
        "cutoff": "2016-03-27",
        "sku_count": 3,
        "features": ["a", "b"],
        "metrics": metrics,
        "git_sha": None,
    }
    model = LinearRegression().fit([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], [1.0, 2.0, 3.0])
    return save_bundle(
        models, {"estimator": model, "calibration": {}}, fields, version=version
    ).name


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def test_empty_registry(models: Path) -> None:
    registry = Registry(models)
    assert registry.versions() == []
    assert registry.champion() is None
    assert registry.history() == []
    assert registry.generation() == "none"
    with pytest.raises(NoChampion):
        registry.load_champion()
    with pytest.raises(NoPreviousChampion):
        registry.rollback()


def test_versions_newest_first_skipping_temp_and_broken(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for v in ("20260101T000000Z-aaaa", "20260301T000000Z-cccc", "20260201T000000Z-bbbb"):
        make(models, v)
    (models / ".tmp-deadbeef").mkdir()
    (models / ".tmp-deadbeef" / MANIFEST_NAME).write_text("{}")
    (models / "README.md").write_text("bundles live here")
    (models / "20260401T000000Z-dddd").mkdir()  # no manifest
    broken = make(models, "20260501T000000Z-eeee")
    (models / broken / MANIFEST_NAME).write_text("{")

    registry = Registry(models)
    assert [m.version for m in registry.versions()] == [
        "20260301T000000Z-cccc",
        "20260201T000000Z-bbbb",
        "20260101T000000Z-aaaa",
    ]
    assert sorted(registry.broken()) == ["20260401T000000Z-dddd", "20260501T000000Z-eeee"]
    assert "20260501T000000Z-eeee" in caplog.text
    assert registry.get("20260101T000000Z-aaaa").cutoff == "2016-03-27"
    with pytest.raises(UnknownVersion):
        registry.get("20990101T000000Z-zzzz")
    with pytest.raises(UnknownVersion):
        registry.get("../models")
    with pytest.raises(BundleNotFound):
        registry.get("20260401T000000Z-dddd")
    with pytest.raises(CorruptBundle):
        registry.get(broken)


def test_promote_and_rollback_sequence(models: Path) -> None:
    a, b, c = (make(models, f"2026010{i}T000000Z-000{i}") for i in (1, 2, 3))
    registry = Registry(models)
    registry.promote(a, reason="first")
    registry.promote(b, reason="better rmsse")
    registry.promote(c)
    assert registry.champion() == c
    assert registry.load_champion().version == c

    assert registry.rollback(reason="c over-forecasts") == b
    assert registry.champion() == b
    registry.promote(c, reason="fixed")
    assert registry.rollback() == b
    assert registry.rollback() == a
    with pytest.raises(NoPreviousChampion):
        registry.rollback()
    assert registry.champion() == a

    history = registry.history()
    assert [(e["action"], e["version"], e["previous"]) for e in history] == [
        ("rollback", a, b),
        ("rollback", b, c),
        ("promote", c, b),
        ("rollback", b, c),
        ("promote", c, b),
        ("promote", b, a),
        ("promote", a, None),
    ]
    assert history[3]["reason"] == "c over-forecasts"
    assert history[-2]["reason"] == "better rmsse"
    assert all(e["at"].endswith("+00:00") for e in history)
    alias = json.loads((models / ALIAS_NAME).read_text())
    assert alias["champion"] == a and alias["generation"] == len(history)
    assert not [p for p in models.iterdir() if p.name.endswith(".tmp")]


def test_promoting_the_champion_again_changes_nothing(models: Path) -> None:
    a = make(models, "20260101T000000Z-0001")
    registry = Registry(models)
    registry.promote(a)
    token = registry.generation()
    registry.promote(a)
    assert registry.generation() == token
    assert len(registry.history()) == 1


def test_promote_refuses_a_broken_bundle_and_keeps_the_champion(models: Path) -> None:
    a = make(models, "20260101T000000Z-0001")
    b = make(models, "20260102T000000Z-0002")
    registry = Registry(models)
    registry.promote(a)
    token = registry.generation()
    (models / b / "estimator.joblib").write_bytes(b"tampered")
    with pytest.raises(PromotionRefused, match=r"cannot promote .*estimator\.joblib"):
        registry.promote(b)
    with pytest.raises(UnknownVersion):
        registry.promote("20990101T000000Z-ffff")
    assert registry.champion() == a
    assert registry.generation() == token
    assert len(registry.history()) == 1


def test_rollback_refuses_a_broken_target(models: Path) -> None:
    a = make(models, "20260101T000000Z-0001")
    b = make(models, "20260102T000000Z-0002")
    registry = Registry(models)
    registry.promote(a)
    registry.promote(b)
    (models / a / "calibration.joblib").unlink()
    with pytest.raises(PromotionRefused, match=r"roll back to .*calibration\.joblib"):
        registry.rollback()
    assert registry.champion() == b


def test_generation_changes_with_every_switch(models: Path) -> None:
    a = make(models, "20260101T000000Z-0001")
    b = make(models, "20260102T000000Z-0002")
    registry = Registry(models)
    seen = [registry.generation()]
    for step in (lambda: registry.promote(a), lambda: registry.promote(b), registry.rollback):
        step()
        token = registry.generation()
        assert token not in seen
        assert Registry(models).generation() == token  # another process sees the same token
        seen.append(token)
    assert registry.generation() == seen[-1]


def test_corrupt_alias_is_reported(models: Path) -> None:
    make(models, "20260101T000000Z-0001")
    (models / ALIAS_NAME).write_text("[1, 2")
    with pytest.raises(AliasCorrupt, match=ALIAS_NAME):
        Registry(models).champion()


def test_concurrent_promotes_from_two_processes(models: Path) -> None:
    versions = [make(models, f"2026010{i}T000000Z-000{i}") for i in range(1, 5)]
    rounds = 12
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from training.registry import Registry

        registry = Registry(Path(sys.argv[1]))
        mine = sys.argv[2:]
        print("ready", flush=True)
        for i in range(int(sys.stdin.readline())):
            registry.promote(mine[i % 2], reason=f"{mine[0]} round {i}")
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(models), *pair],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for pair in (versions[:2], versions[2:])
    ]
    # Start both loops only once both processes have imported, so they really overlap.
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n", proc.stderr
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{rounds}\n".encode())
        proc.stdin.flush()
    for proc in procs:
        _, err = proc.communicate(timeout=120)  # also closes stdin
        assert proc.returncode == 0, err.decode()

    registry = Registry(models)
    history = registry.history()
    # Each process alternates between its own two versions, so every promote is a real switch:
    # a lost update would show as a missing event.
    assert len(history) == 2 * rounds
    assert registry.champion() in versions
    assert history[0]["version"] == registry.champion()
    for newer, older in itertools.pairwise(history):
        assert newer["previous"] == older["version"]
    alias = json.loads((models / ALIAS_NAME).read_text())
    assert alias["generation"] == 2 * rounds
