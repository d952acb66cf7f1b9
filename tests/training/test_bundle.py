"""Bundles: atomic save, verified load, and every refusal load_bundle promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from training import bundle as bundle_mod
from training.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleError,
    BundleNotFound,
    ChecksumMismatch,
    CorruptBundle,
    IncompatibleBundle,
    Manifest,
    UnsafeBundlePath,
    load_bundle,
    read_manifest,
    running_libraries,
    save_bundle,
    sha256_file,
)
from training.registry import Registry

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["lag_28", "price", "dow"]


class NamedModel:
    """A tiny picklable stand-in for a Forecaster that exposes its feature order."""

    def __init__(self, features: list[str]) -> None:
        self.feature_names_ = list(features)
        self.coef_ = np.arange(len(features), dtype=float)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) @ self.coef_


def fields(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data_start": date(2011, 1, 29),
        "data_end": "2016-04-24",
        "cutoff": "2016-03-27",
        "sku_count": 30,
        "features": FEATURES,
        "strategy": {"kind": "direct", "horizon": 28},
        "params": {"num_leaves": np.int64(63), "learning_rate": 0.05},
        "metrics": {"rmsse": np.float64(0.81), "wape": 0.42},
        "git_sha": "0" * 40,
    }
    base.update(overrides)
    return base


def fitted_regression() -> LinearRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    return LinearRegression().fit(x, x @ np.array([1.0, -2.0, 0.5]) + 3.0)


def edit_manifest(path: Path, **changes: Any) -> None:
    manifest_path = path / MANIFEST_NAME
    data = json.loads(manifest_path.read_text())
    data.update(changes)
    manifest_path.write_text(json.dumps(data))


def test_round_trip(tmp_path: Path) -> None:
    models = tmp_path / "models"
    reg = fitted_regression()
    extra = {"p90_scale": 1.3, "levels": [0.1, 0.5, 0.9]}
    path = save_bundle(models, {"estimator": reg, "calibration": extra}, fields())

    assert path.parent == models
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", path.name)
    assert sorted(p.name for p in models.iterdir()) == [path.name]  # no temp dir left behind
    loaded = load_bundle(path, models_dir=models)
    m = loaded.manifest
    assert m.version == path.name == loaded.version
    assert m.created_at.startswith(path.name[:4] + "-") and m.created_at.endswith("+00:00")
    assert (m.data_start, m.data_end, m.cutoff, m.sku_count) == (
        "2011-01-29",
        "2016-04-24",
        "2016-03-27",
        30,
    )
    assert m.features == FEATURES
    assert m.params == {"num_leaves": 63, "learning_rate": 0.05}
    assert m.metrics["rmsse"] == pytest.approx(0.81)
    assert m.format_version == FORMAT_VERSION
    assert m.libraries == running_libraries()
    assert set(m.libraries) >= {"python", "lightgbm", "scikit-learn", "numpy", "pandas", "salesfc"}
    assert m.artifacts == {
        "estimator.joblib": sha256_file(path / "estimator.joblib"),
        "calibration.joblib": sha256_file(path / "calibration.joblib"),
    }
    x = np.eye(3)
    np.testing.assert_allclose(loaded.artifacts["estimator"].predict(x), reg.predict(x))
    assert loaded.artifacts["calibration"] == extra
    assert read_manifest(path) == m
    assert Manifest.from_json(m.to_json()) == m


def test_versions_are_unique_and_never_reused(tmp_path: Path) -> None:
    first = save_bundle(tmp_path, {"calibration": {}}, fields())
    second = save_bundle(tmp_path, {"calibration": {}}, fields())
    assert first.name != second.name
    with pytest.raises(BundleError, match="never reused"):
        save_bundle(tmp_path, {"calibration": {}}, fields(), version=first.name)
    with pytest.raises(BundleError, match="invalid version"):
        save_bundle(tmp_path, {"calibration": {}}, fields(), version="../escape")


def test_features_come_from_and_must_match_the_model(tmp_path: Path) -> None:
    no_features = {k: v for k, v in fields().items() if k != "features"}
    path = save_bundle(tmp_path, {"model": NamedModel(FEATURES)}, no_features)
    assert read_manifest(path).features == FEATURES
    with pytest.raises(IncompatibleBundle, match="feature order"):
        save_bundle(tmp_path, {"model": NamedModel(FEATURES)}, fields(features=FEATURES[::-1]))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]

    edit_manifest(path, features=["price", "lag_28", "dow"])
    with pytest.raises(IncompatibleBundle, match="differ from the model's feature order"):
        load_bundle(path, models_dir=tmp_path)


@pytest.mark.parametrize(
    "bad",
    [
        {"cutoff": 5},
        {"unknown_key": 1},
        {"version": "x"},
        {"metrics": {"model": object()}},
    ],
)
def test_bad_manifest_fields_are_refused(tmp_path: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(BundleError):
        save_bundle(tmp_path, {"calibration": {}}, fields(**bad))
    assert list(tmp_path.iterdir()) == []


def test_non_finite_metrics_are_stored_as_null(tmp_path: Path) -> None:
    metrics = {"rmsse": float("nan"), "mase": np.float64("inf"), "folds": [1.0, float("nan")]}
    path = save_bundle(tmp_path, {"calibration": {}}, fields(metrics=metrics))
    text = (path / MANIFEST_NAME).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_manifest(path).metrics == {"rmsse": None, "mase": None, "folds": [1.0, None]}


def test_missing_required_field_is_refused(tmp_path: Path) -> None:
    partial = {k: v for k, v in fields().items() if k != "cutoff"}
    with pytest.raises(BundleError, match="lacks: cutoff"):
        save_bundle(tmp_path, {"calibration": {}}, partial)


def test_tampered_artifact_fails_its_checksum(tmp_path: Path) -> None:
    path = save_bundle(tmp_path, {"estimator": fitted_regression(), "calibration": {}}, fields())
    target = path / "estimator.joblib"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match=r"estimator\.joblib"):
        load_bundle(path, models_dir=tmp_path)


def test_missing_artifact_and_manifest(tmp_path: Path) -> None:
    path = save_bundle(tmp_path, {"estimator": fitted_regression(), "calibration": {}}, fields())
    (path / "calibration.joblib").unlink()
    with pytest.raises(CorruptBundle, match=r"missing artifact calibration\.joblib"):
        load_bundle(path, models_dir=tmp_path)
    (path / MANIFEST_NAME).unlink()
    with pytest.raises(BundleNotFound, match=r"no manifest\.json"):
        load_bundle(path, models_dir=tmp_path)
    with pytest.raises(BundleNotFound, match="no bundle directory"):
        load_bundle(tmp_path / "20990101T000000Z-0000", models_dir=tmp_path)


@pytest.mark.parametrize(
    ("library", "bump"),
    [("lightgbm", "minor"), ("scikit-learn", "minor"), ("numpy", "minor"), ("pandas", "major")],
)
def test_library_release_mismatch_is_refused(tmp_path: Path, library: str, bump: str) -> None:
    path = save_bundle(tmp_path, {"calibration": {}}, fields())
    libraries = read_manifest(path).libraries
    running = libraries[library]
    major, minor = (int(p) for p in running.split(".")[:2])
    other = f"{major}.{minor + 1}.0" if bump == "minor" else f"{major + 1}.0.0"
    libraries[library] = other
    edit_manifest(path, libraries=libraries)
    with pytest.raises(IncompatibleBundle) as info:
        load_bundle(path, models_dir=tmp_path)
    message = str(info.value)
    assert library in message and other in message and running in message


def test_patch_or_pandas_minor_difference_is_accepted(tmp_path: Path) -> None:
    path = save_bundle(tmp_path, {"calibration": {"a": 1}}, fields())
    libraries = read_manifest(path).libraries
    major, minor = libraries["numpy"].split(".")[:2]
    libraries["numpy"] = f"{major}.{minor}.999"
    libraries["pandas"] = libraries["pandas"].split(".")[0] + ".999.0"
    edit_manifest(path, libraries=libraries)
    assert load_bundle(path, models_dir=tmp_path).artifacts["calibration"] == {"a": 1}


def test_unknown_format_and_corrupt_manifest(tmp_path: Path) -> None:
    path = save_bundle(tmp_path, {"calibration": {}}, fields())
    edit_manifest(path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(IncompatibleBundle, match="format_version"):
        load_bundle(path, models_dir=tmp_path)
    (path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CorruptBundle, match="not valid JSON"):
        load_bundle(path, models_dir=tmp_path)
    (path / MANIFEST_NAME).write_text(json.dumps({"version": path.name}))
    with pytest.raises(CorruptBundle, match="lacks field"):
        load_bundle(path, models_dir=tmp_path)


def test_artifact_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    path = save_bundle(tmp_path, {"calibration": {}}, fields())
    edit_manifest(path, artifacts={"../evil.joblib": "0" * 64})
    with pytest.raises(CorruptBundle, match="bad artifact name"):
        load_bundle(path, models_dir=tmp_path)


def test_only_loads_from_inside_the_models_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    path = save_bundle(elsewhere, {"calibration": {}}, fields())
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(UnsafeBundlePath, match="models directory"):
        load_bundle(path, models_dir=models)
    link = models / path.name
    link.symlink_to(path)
    with pytest.raises(UnsafeBundlePath):
        load_bundle(link, models_dir=models)
    with pytest.raises(UnsafeBundlePath):
        load_bundle(models / ".." / "elsewhere" / path.name, models_dir=models)


def test_default_models_dir_comes_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featurestore.config import get_settings

    path = save_bundle(tmp_path / "models", {"calibration": {"x": 2}}, fields())
    monkeypatch.setenv("SALESFC_MODELS_DIR", str(tmp_path / "other"))
    get_settings.cache_clear()
    try:
        with pytest.raises(UnsafeBundlePath):
            load_bundle(path)
        monkeypatch.setenv("SALESFC_MODELS_DIR", str(tmp_path / "models"))
        get_settings.cache_clear()
        assert load_bundle(path).artifacts["calibration"] == {"x": 2}
    finally:
        get_settings.cache_clear()


def test_failure_mid_save_leaves_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = save_bundle(tmp_path, {"calibration": {"ok": True}}, fields())
    real_dump = joblib.dump
    calls: list[Path] = []

    def failing_dump(obj: Any, filename: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(Path(filename))
        if len(calls) == 2:
            Path(filename).write_bytes(b"half a pick")
            raise OSError("disk full")
        return real_dump(obj, filename, *args, **kwargs)

    monkeypatch.setattr(bundle_mod.joblib, "dump", failing_dump)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(tmp_path, {"estimator": fitted_regression(), "calibration": {}}, fields())
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]
    registry = Registry(tmp_path)
    assert [m.version for m in registry.versions()] == [good.name]
    assert registry.broken() == {}


def test_killed_save_leaves_no_visible_version(tmp_path: Path) -> None:
    """A process killed mid-save leaves only a hidden temp dir that listings ignore."""
    script = textwrap.dedent(
        f"""
        import os, signal, joblib
        from pathlib import Path
        from training import bundle

        real = joblib.dump
        def dump(obj, filename, *a, **k):
            real(obj, filename, *a, **k)
            if Path(filename).name == "second.joblib":
                os.kill(os.getpid(), signal.SIGKILL)
        bundle.joblib.dump = dump
        bundle.save_bundle(
            Path({str(tmp_path)!r}),
            {{"first": {{"a": 1}}, "second": {{"b": 2}}}},
            {{"data_start": "2016-01-01", "data_end": "2016-02-01", "cutoff": "2016-02-01",
              "sku_count": 1, "git_sha": None}},
        )
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == -9, proc.stderr.decode()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".tmp-")
    assert (leftovers[0] / "second.joblib").exists()
    registry = Registry(tmp_path)
    assert registry.versions() == [] and registry.broken() == {}
    with pytest.raises(UnsafeBundlePath):
        load_bundle(leftovers[0], models_dir=tmp_path)
    path = save_bundle(tmp_path, {"calibration": {}}, fields())
    assert [m.version for m in registry.versions()] == [path.name]
    # A recent leftover may be a save in progress elsewhere: the next save keeps it...
    assert leftovers[0].exists()
    # ...until it is stale: then the next save sweeps it away, and nothing else.
    old = time.time() - bundle_mod.STALE_TMP_SECONDS - 60
    for p in [leftovers[0], *leftovers[0].iterdir()]:
        os.utime(p, (old, old))
    fresh = tmp_path / ".tmp-fresh"
    fresh.mkdir()
    second = save_bundle(tmp_path, {"calibration": {}}, fields())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, second.name, ".tmp-fresh"]
    )


def test_verify_false_skips_only_the_checksum(tmp_path: Path) -> None:
    path = save_bundle(tmp_path, {"calibration": {"v": 1}}, fields())
    joblib.dump({"v": 2}, path / "calibration.joblib")
    with pytest.raises(ChecksumMismatch):
        load_bundle(path, models_dir=tmp_path)
    assert load_bundle(path, models_dir=tmp_path, verify=False).artifacts["calibration"] == {"v": 2}
    libraries = read_manifest(path).libraries
    libraries["numpy"] = "1.0.0"
    edit_manifest(path, libraries=libraries)
    with pytest.raises(IncompatibleBundle):
        load_bundle(path, models_dir=tmp_path, verify=False)
