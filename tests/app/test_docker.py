"""Docker files stay consistent with the Makefile, the CLI and the lock (no Docker engine runs
here): a fresh `docker compose up` migrates, fills the store, trains a first champion and then
serves; the nightly job retries with backoff; the image installs exactly the locked versions."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from app.cli import cli
from app.cli.nightly import LOAD_ORDER
from training.bundle import RECORDED_LIBRARIES

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "docker" / "init.sh"
DAY = 86_400


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {name: (version, [sha256 hashes])}."""
    text = (ROOT / "requirements.lock").read_text()
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9_.-]+)==(\S+) \\", block)
        if head:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})\b", block)
            pins[canonicalize_name(head.group(1))] = (head.group(2), hashes)
    return pins


def _init_script_commands() -> list[list[str]]:
    """The salesfc invocations of docker/init.sh, shell variables left as words."""
    lines = [ln.strip() for ln in INIT.read_text().splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("salesfc ")]


def _mounts(compose: dict) -> dict[str, str]:
    """The shared service volumes as {target: source} (sources may be ${VAR:-default})."""
    mounts = {}
    for volume in compose["x-salesfc"]["volumes"]:
        match = re.fullmatch(r"(.+):(/[^:]+)(?::ro)?", volume)
        assert match, volume
        mounts[match.group(2)] = match.group(1)
    return mounts


def _salesfc_args(command: list[str]) -> list[list[str]]:
    """The salesfc invocations a compose command makes (directly or through init.sh)."""
    if command[0] == "salesfc":
        return [command[1:]]
    if command[0] == "/opt/salesfc/docker/init.sh":
        return _init_script_commands()
    raise AssertionError(f"unexpected compose command {command}")


def test_init_precedes_api_and_nightly(compose: dict) -> None:
    services = compose["services"]
    # Services of a profile (dask: tests/app/test_cli_dask.py) start only when it is asked for.
    assert {n for n, s in services.items() if "profiles" not in s} == {
        "postgres",
        "init",
        "api",
        "nightly",
    }
    assert "healthcheck" in services["postgres"]
    assert services["init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["init"]["restart"] == "no"  # one-shot: a rerun would be a new `up`
    for name in ("api", "nightly"):
        assert services[name]["depends_on"] == {
            "init": {"condition": "service_completed_successfully"}
        }
        assert services[name]["restart"] == "unless-stopped"
    # The image's healthcheck asks /healthz, which only the API serves.
    assert "healthcheck" not in services["api"]
    for name in ("init", "nightly"):
        assert services[name]["healthcheck"] == {"disable": True}


def test_commands_are_real_cli_commands(compose: dict) -> None:
    runner = CliRunner()
    seen = set()
    for name in ("init", "api", "nightly"):
        for args in _salesfc_args(compose["services"][name]["command"]):
            # --help after the real options: an option the command lacks fails the parse.
            result = runner.invoke(cli, [*args, "--help"])
            assert result.exit_code == 0, (name, args, result.output)
            seen.add(" ".join(args[:2]) if args[0] == "db" else args[0])
    assert {"db upgrade", "ingest", "demo-data", "train", "serve", "nightly"} <= seen


def test_init_does_what_make_run_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run = makefile[makefile.index("\nrun:") : makefile.index("\n\n", makefile.index("\nrun:"))]
    made = [ln.split("salesfc ", 1)[1] for ln in run.splitlines() if "$(BIN)/salesfc " in ln]
    init = [" ".join(args) for args in _init_script_commands()]
    for step in ("db upgrade", "demo-data --if-empty", "train --if-no-champion --folds 1"):
        assert step in made and step in init, step
    assert init.index("db upgrade") < init.index("demo-data --if-empty")
    assert init[-1] == "train --if-no-champion --folds 1"
    assert os.access(INIT, os.X_OK)  # COPY keeps the mode: compose runs it directly
    entities = re.search(r"for entity in ([a-z0-9 ]+); do", INIT.read_text())
    assert entities and tuple(entities.group(1).split()) == LOAD_ORDER


def _run_init(tmp_path: Path, exports: Path | None, fail: str = "") -> tuple[int, list[str]]:
    """Run docker/init.sh with a fake `salesfc` that logs its arguments (and fails on ``fail``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    fake = bin_dir / "salesfc"
    fake.write_text(
        '#!/bin/sh\necho "$*" >> "$CALLS"\n'
        'case "$*" in "$FAIL"*) [ -n "$FAIL" ] && exit 3;; esac\nexit 0\n'
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(log)}
    env["FAIL"] = fail
    args = ["sh", str(INIT)] + ([str(exports)] if exports else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, calls


def test_init_loads_demo_data_into_a_store_without_exports(tmp_path: Path) -> None:
    empty = tmp_path / "exports"
    empty.mkdir()
    (empty / "README.md").write_text("drop exports here")
    for exports in (None, empty, tmp_path / "not-mounted"):
        code, calls = _run_init(tmp_path, exports)
        assert code == 0
        assert calls == ["db upgrade", "demo-data --if-empty", "train --if-no-champion --folds 1"]
        (tmp_path / "calls.log").unlink()


def test_init_loads_mounted_exports_in_order_and_stops_at_a_failure(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    for name in ("sales.csv", "products.parquet", "prices.parquet"):
        (exports / name).write_text("x")
    code, calls = _run_init(tmp_path, exports)
    assert code == 0
    assert calls == [
        "db upgrade",
        f"ingest products {exports}/products.parquet",
        f"ingest sales {exports}/sales.csv",
        f"ingest prices {exports}/prices.parquet",
        "train --if-no-champion --folds 1",
    ]
    (tmp_path / "calls.log").unlink()
    code, calls = _run_init(tmp_path, exports, fail="ingest sales")
    assert code != 0  # the API never starts on half a catalogue
    assert calls[-1].startswith("ingest sales") and not any("train" in c for c in calls)


def test_nightly_retries_with_backoff_and_never_sleeps_a_day(compose: dict) -> None:
    nightly = compose["services"]["nightly"]
    command = nightly["command"]
    assert command[:2] == ["salesfc", "nightly"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert 0 < float(options["--backoff"]) <= float(options["--max-backoff"]) < DAY
    assert "--once" not in command  # the service schedules itself
    text = (ROOT / "docker-compose.yml").read_text()
    assert "sleep" not in text and "86400" not in text
    assert options["--exports"] in _mounts(compose)
    assert compose["services"]["init"]["command"][1] == options["--exports"]


def test_compose_uses_postgres_with_psycopg_and_named_volumes(compose: dict) -> None:
    env = compose["x-salesfc"]["environment"]
    assert env["SALESFC_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["SALESFC_DATABASE_URL"]
    mounts = _mounts(compose)
    assert mounts[env["SALESFC_MODELS_DIR"]] == "models"
    assert mounts[env["SALESFC_DATA_DIR"]] == "data"
    assert {"models", "data", "pgdata"} <= set(compose["volumes"])
    exports = next(v for v in compose["x-salesfc"]["volumes"] if "exports" in v)
    assert exports.endswith(":ro")  # rejects go to the data volume, never into the shop's files


def test_dockerfile_is_slim_non_root_with_healthcheck(dockerfile: str) -> None:
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    user = re.search(r"^USER (\S+)", dockerfile, re.M)
    assert user and user.group(1) not in {"root", "0"}
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert 'CMD ["salesfc", "serve"]' in dockerfile
    for path in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / path).exists(), path


def test_image_installs_the_lock_with_hashes_then_the_project_alone(dockerfile: str) -> None:
    runs = [" ".join(r.split()) for r in re.findall(r"^RUN (.*?)(?<!\\)$", dockerfile, re.M | re.S)]
    pip_runs = [r for r in runs if "pip install" in r]
    assert pip_runs[0] == "pip install --require-hashes --no-deps -r requirements.lock"
    assert "--no-deps" in pip_runs[1] and "--no-build-isolation" in pip_runs[1]
    assert all("-r " in r or "--no-deps" in r for r in pip_runs)  # nothing resolved unpinned
    # The lock is copied and installed before the code: code changes reuse the cached layer.
    assert dockerfile.index("COPY requirements.lock") < dockerfile.index("COPY app")


def _runtime_closure(lock: dict[str, tuple[str, list[str]]]) -> set[str]:
    """Every distribution the runtime dependencies need here, extras included.

    A package's own requirements are read from its installed metadata only where the installed
    version is the locked one (they are then the locked version's): the check never depends on
    what a fresh `make install` happens to resolve later.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo: list[tuple[Requirement, str]] = [(Requirement(r), "") for r in project["dependencies"]]
    seen: set[tuple[str, str]] = set()
    while todo:
        req, parent_extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate(
            {**default_environment(), "extra": parent_extra}
        ):
            continue
        name = canonicalize_name(req.name)
        for extra in sorted(req.extras) or [""]:
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                installed = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                continue
            if lock.get(name, ("",))[0] == installed:
                todo.extend((Requirement(sub), extra) for sub in metadata.requires(req.name) or [])
    return {name for name, _ in seen}


def test_lock_pins_every_runtime_dependency_with_hashes(
    lock: dict[str, tuple[str, list[str]]],
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for line in project["project"]["dependencies"]:
        req = Requirement(line)
        version, _ = lock[canonicalize_name(req.name)]
        assert req.specifier.contains(version, prereleases=True), (line, version)
    closure = _runtime_closure(lock)
    missing = closure - set(lock)
    assert not missing, f"not in requirements.lock (run `make lock`): {sorted(missing)}"
    for name, (version, hashes) in lock.items():
        assert hashes, f"{name}=={version} has no hash"
    dev = project["project"]["optional-dependencies"]["dev"]
    dev_only = {canonicalize_name(Requirement(r).name) for r in dev} - closure
    assert not dev_only & set(lock), "dev tools do not belong in the image"
    # --no-build-isolation builds the project with the locked backend
    for line in project["build-system"]["requires"]:
        req = Requirement(line)
        assert req.specifier.contains(lock[canonicalize_name(req.name)][0]), line


def test_lock_pins_the_libraries_bundles_record(lock: dict[str, tuple[str, list[str]]]) -> None:
    """A bundle is refused by another minor release of these: the image must not drift."""
    for name in RECORDED_LIBRARIES:
        if name != "salesfc":
            assert canonicalize_name(name) in lock, name


def test_makefile_refreshes_the_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\nlock:") :]
    assert "--generate-hashes" in target and "requirements.lock" in target
    assert "pip freeze" in target  # pinned to what .venv runs, not to whatever is newest


DOCKERIGNORE_MUST = (".git", ".env", ".venv", "data", "models", "exports", ".mypy_cache", "bench")


def test_dockerignore_keeps_heavy_and_secret_paths_out_of_the_context(dockerfile: str) -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)

    for path in DOCKERIGNORE_MUST:
        assert ignored(path), path
    for path in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert not ignored(path), f"{path} is COPY'd but ignored"
