"""Model bundles: one directory per version with a manifest and checksummed joblib artifacts.

A bundle is ``models_dir/<version>/manifest.json`` plus one ``<name>.joblib`` file per artifact.
It is written into a hidden ``.tmp-<uuid>`` directory, fsync'd and renamed into place, so a crash
never leaves a half-written version visible (the next save sweeps a crashed save's temp dir once
it is an hour old). Loading re-checks everything the manifest promises
and refuses a bundle that does not match, because bundles are pickles and a silent mismatch means
silently wrong forecasts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ARTIFACT_SUFFIX = ".joblib"
TMP_PREFIX = ".tmp-"
# A temp dir untouched for this long is a crashed save's leftover (a save takes seconds).
STALE_TMP_SECONDS = 3600.0
# Libraries whose pickles only round-trip within the same release prefix: major.minor for the
# model libraries, major for pandas (bundles may hold frames, e.g. backtest predictions).
CHECKED_LIBRARIES = {"lightgbm": 2, "scikit-learn": 2, "numpy": 2, "pandas": 1}
RECORDED_LIBRARIES = ("lightgbm", "scikit-learn", "numpy", "pandas", "salesfc")

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_REQUIRED_FIELDS = ("data_start", "data_end", "cutoff", "sku_count")
_OPTIONAL_FIELDS = ("features", "strategy", "params", "metrics", "git_sha")
_CHUNK = 1 << 20


class BundleError(Exception):
    """A bundle cannot be written or loaded; the message says which and why."""


class BundleNotFound(BundleError):
    """No bundle directory or no manifest at the given path."""


class CorruptBundle(BundleError):
    """The manifest is unreadable or an artifact it lists is missing or unloadable."""


class ChecksumMismatch(CorruptBundle):
    """An artifact's sha256 differs from the one recorded in the manifest."""


class IncompatibleBundle(BundleError):
    """The bundle was written by another format or library release, or its features disagree."""


class UnsafeBundlePath(BundleError):
    """The path lies outside the configured models directory (bundles are pickles)."""


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle promises about itself; stored as manifest.json."""

    version: str
    created_at: str
    git_sha: str | None
    data_start: str
    data_end: str
    cutoff: str
    sku_count: int
    features: list[str]
    strategy: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    libraries: dict[str, str]
    artifacts: dict[str, str]
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON-ready data."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The manifest as indented, key-sorted JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Build a manifest from parsed JSON, refusing missing, unknown or mistyped fields."""
        if not isinstance(data, dict):
            raise CorruptBundle("manifest is not a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data) - {"format_version"})
        unknown = sorted(set(data) - names)
        if missing:
            raise CorruptBundle(f"manifest lacks field(s): {', '.join(missing)}")
        if unknown:
            raise CorruptBundle(f"manifest has unknown field(s): {', '.join(unknown)}")
        kinds: dict[str, tuple[type, ...]] = {
            "version": (str,),
            "created_at": (str,),
            "git_sha": (str, type(None)),
            "data_start": (str,),
            "data_end": (str,),
            "cutoff": (str,),
            "sku_count": (int,),
            "features": (list,),
            "strategy": (dict,),
            "params": (dict,),
            "metrics": (dict,),
            "libraries": (dict,),
            "artifacts": (dict,),
            "format_version": (int,),
        }
        for name, kind in kinds.items():
            if name in data and (not isinstance(data[name], kind) or isinstance(data[name], bool)):
                raise CorruptBundle(f"manifest field {name!r} has the wrong type")
        if not all(isinstance(f, str) for f in data["features"]):
            raise CorruptBundle("manifest field 'features' must be a list of strings")
        for name in ("libraries", "artifacts"):
            if not all(isinstance(v, str) for v in data[name].values()):
                raise CorruptBundle(f"manifest field {name!r} must map names to strings")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse manifest.json text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorruptBundle(f"manifest is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its manifest, its artifacts by name and where it lives."""

    manifest: Manifest
    artifacts: dict[str, Any]
    path: Path

    @property
    def version(self) -> str:
        return self.manifest.version


def running_libraries() -> dict[str, str]:
    """Versions of Python and the libraries whose pickles a bundle depends on."""
    found = {"python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def current_git_sha() -> str | None:
    """The commit of the code doing the training, or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


def new_version(now: datetime | None = None) -> str:
    """A sortable, practically unique version id: UTC timestamp plus 16 random bits."""
    now = now or datetime.now(UTC)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def is_valid_version(version: str) -> bool:
    """Whether a string can name a bundle directory (no separators, not hidden)."""
    return bool(_VERSION_RE.fullmatch(version))


def save_bundle(
    models_dir: Path,
    artifacts: dict[str, Any],
    manifest_fields: dict[str, Any],
    *,
    version: str | None = None,
) -> Path:
    """Write artifacts and their manifest atomically to models_dir/<version>/ and return it."""
    if not artifacts:
        raise BundleError("a bundle needs at least one artifact")
    for name in artifacts:
        if not _ARTIFACT_RE.fullmatch(name):
            raise BundleError(f"artifact name {name!r} must be letters, digits, '_' or '-'")
    fields = _manifest_fields(artifacts, manifest_fields)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    if version is None:
        version = new_version(now)
        while (models_dir / version).exists():
            version = new_version(now)
    elif not is_valid_version(version):
        raise BundleError(f"invalid version id {version!r}")
    target = models_dir / version
    if target.exists():
        raise BundleError(f"version {version} already exists in {models_dir}; ids are never reused")

    sweep_stale_temp(models_dir)
    tmp = models_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        checksums: dict[str, str] = {}
        for name, obj in artifacts.items():
            path = tmp / f"{name}{ARTIFACT_SUFFIX}"
            joblib.dump(obj, path)
            _fsync_file(path)
            checksums[path.name] = sha256_file(path)
        manifest = Manifest(
            version=version,
            created_at=now.isoformat(),
            libraries=running_libraries(),
            artifacts=checksums,
            format_version=FORMAT_VERSION,
            **fields,
        )
        manifest_path = tmp / MANIFEST_NAME
        manifest_path.write_text(manifest.to_json(), encoding="utf-8")
        _fsync_file(manifest_path)
        _fsync_dir(tmp)
        # rename(2) of a directory onto a non-empty one fails, so a racing writer cannot clobber.
        os.rename(tmp, target)
        _fsync_dir(models_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def sweep_stale_temp(models_dir: Path, older_than: float = STALE_TMP_SECONDS) -> list[Path]:
    """Delete the temp dirs that crashed saves left behind; return what was removed.

    Only hidden ``.tmp-*`` directories whose newest entry is older than ``older_than`` seconds
    go: a save in progress in another process keeps writing into its own and is left alone.
    """
    removed: list[Path] = []
    cutoff = time.time() - older_than
    for path in Path(models_dir).glob(f"{TMP_PREFIX}*"):
        try:
            if not path.is_dir() or path.is_symlink():
                continue
            newest = max([path.stat().st_mtime, *(p.stat().st_mtime for p in path.iterdir())])
        except OSError:
            continue  # removed meanwhile by another sweeper
        if newest < cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def read_manifest(path: Path) -> Manifest:
    """Read and validate the manifest of the bundle directory at path (no artifact is opened)."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not path.is_dir():
        raise BundleNotFound(f"no bundle directory at {path}")
    if not manifest_path.is_file():
        raise BundleNotFound(f"bundle {path.name} has no {MANIFEST_NAME}")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptBundle(f"cannot read {manifest_path}: {exc}") from exc
    try:
        manifest = Manifest.from_json(text)
    except CorruptBundle as exc:
        raise CorruptBundle(f"bundle {path.name}: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise IncompatibleBundle(
            f"bundle {path.name} has format_version {manifest.format_version}; "
            f"this code reads format_version {FORMAT_VERSION}"
        )
    if manifest.version != path.name:
        raise CorruptBundle(
            f"bundle directory {path.name} holds a manifest for version {manifest.version}"
        )
    return manifest


def load_bundle(path: Path, *, verify: bool = True, models_dir: Path | None = None) -> Bundle:
    """Load a bundle from inside the models directory after checking its manifest.

    ``models_dir`` defaults to the configured one. ``verify=False`` skips only the sha256 pass
    (for callers that verified the same bundle moments ago); the path, format, library and
    feature checks always run.
    """
    if models_dir is None:
        from featurestore.config import get_settings

        models_dir = get_settings().models_dir
    path = _inside(Path(models_dir), Path(path))
    manifest = read_manifest(path)
    check_libraries(manifest)
    files: dict[str, Path] = {}
    for file_name, expected in manifest.artifacts.items():
        stem = file_name.removesuffix(ARTIFACT_SUFFIX)
        if not file_name.endswith(ARTIFACT_SUFFIX) or not _ARTIFACT_RE.fullmatch(stem):
            raise CorruptBundle(
                f"bundle {manifest.version} lists a bad artifact name {file_name!r}"
            )
        file_path = path / file_name
        if not file_path.is_file():
            raise CorruptBundle(f"bundle {manifest.version} is missing artifact {file_name}")
        if file_path.resolve().parent != path:
            raise UnsafeBundlePath(
                f"artifact {file_name} of bundle {manifest.version} points outside the bundle"
            )
        if verify:
            actual = sha256_file(file_path)
            if actual != expected:
                raise ChecksumMismatch(
                    f"artifact {file_name} of bundle {manifest.version} fails its checksum: "
                    f"manifest sha256 {expected}, file sha256 {actual}"
                )
        files[stem] = file_path
    loaded: dict[str, Any] = {}
    for stem, file_path in files.items():
        try:
            loaded[stem] = joblib.load(file_path)
        except Exception as exc:
            raise CorruptBundle(
                f"artifact {file_path.name} of bundle {manifest.version} cannot be loaded: {exc}"
            ) from exc
    model_features = _feature_order(loaded.get("model"))
    if model_features is not None and model_features != manifest.features:
        raise IncompatibleBundle(
            f"bundle {manifest.version}: manifest features {manifest.features} differ from the "
            f"model's feature order {model_features}"
        )
    return Bundle(manifest=manifest, artifacts=loaded, path=path)


def check_libraries(manifest: Manifest) -> None:
    """Refuse a bundle whose pickling libraries differ from ours in major (or minor) release."""
    running = running_libraries()
    for name, parts in CHECKED_LIBRARIES.items():
        recorded = manifest.libraries.get(name)
        if recorded is None:
            raise IncompatibleBundle(f"bundle {manifest.version} records no {name} version")
        wanted = _release(recorded, parts)
        if wanted != _release(running[name], parts):
            raise IncompatibleBundle(
                f"bundle {manifest.version} was written with {name} {recorded} but {name} "
                f"{running[name]} is running; retrain or install {name} "
                f"{'.'.join(map(str, wanted))}.x"
            )


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_fields(artifacts: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise BundleError(f"manifest_fields has unknown or computed key(s): {', '.join(unknown)}")
    missing = [k for k in _REQUIRED_FIELDS if k not in given]
    if missing:
        raise BundleError(f"manifest_fields lacks: {', '.join(missing)}")
    model_features = _feature_order(artifacts.get("model"))
    features = given.get("features", model_features if model_features is not None else [])
    features = [str(f) for f in features]
    if model_features is not None and features != model_features:
        raise IncompatibleBundle(
            f"manifest features {features} differ from the model's feature order {model_features}"
        )
    raw = {
        "data_start": given["data_start"],
        "data_end": given["data_end"],
        "cutoff": given["cutoff"],
        "sku_count": int(given["sku_count"]),
        "features": features,
        "strategy": dict(given.get("strategy") or {}),
        "params": dict(given.get("params") or {}),
        "metrics": dict(given.get("metrics") or {}),
        "git_sha": given["git_sha"] if "git_sha" in given else current_git_sha(),
    }
    try:
        # A JSON round trip stores exactly what a later load will read back.
        plain: dict[str, Any] = _finite(json.loads(json.dumps(raw, default=_json_default)))
    except (TypeError, ValueError) as exc:
        raise BundleError(f"manifest_fields are not JSON-serialisable: {exc}") from exc
    for key in ("data_start", "data_end", "cutoff"):
        if not isinstance(plain[key], str):
            raise BundleError(f"manifest field {key!r} must be a date or an ISO date string")
    return plain


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _feature_order(model: Any) -> list[str] | None:
    names = getattr(model, "feature_names_", None)
    return None if names is None else [str(n) for n in names]


def _release(version: str, parts: int) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:parts])


def _finite(value: Any) -> Any:
    # NaN / inf are not JSON: jq, browsers and the API's responses would all reject the manifest.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _inside(models_dir: Path, path: Path) -> Path:
    root = models_dir.resolve()
    resolved = path.resolve()
    if resolved.parent != root or resolved.name.startswith("."):
        raise UnsafeBundlePath(
            f"refusing to load {path}: bundles are pickles and load only from directly "
            f"inside the models directory {root}"
        )
    return resolved


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename durable; some filesystems refuse it, which is harmless.
    with contextlib.suppress(OSError):
        _fsync_file(path)
