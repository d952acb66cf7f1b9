"""Shared fixtures: every test gets a clean, migrated database on SQLite and on PostgreSQL.

SQLite: the schema is migrated once per session into a template file that each test copies.
PostgreSQL: a database of the session's own is created and migrated once, and every table is
truncated before each test. With ``CI=true`` an unreachable PostgreSQL fails the run instead of
skipping it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from featurestore import migrations
from featurestore.config import Settings, get_settings
from featurestore.db import engine_for, make_engine
from featurestore.tables import Base

PG_ADMIN_URL = os.environ.get(
    "SALESFC_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ROOT = Path(__file__).resolve().parents[1]
M5_TINY = ROOT.parent / "shared" / "data" / "m5_tiny" / "tiny_m5.parquet"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _pg_admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def pg_unavailable(reason: str) -> None:
    """Fail under CI, skip elsewhere: CI must never silently skip PostgreSQL."""
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI but unreachable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unreachable: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Engine]:
    """An autocommit engine on the PostgreSQL server's admin database."""
    admin = _pg_admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        admin.dispose()
        pg_unavailable(str(exc).splitlines()[0])
    yield admin
    admin.dispose()


def create_pg_database(admin: Engine) -> str:
    """Create an empty database of the test session's own and return its URL."""
    name = f"salesfc_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(admin: Engine, url: str) -> None:
    """Drop a database made by create_pg_database, closing its connections first."""
    name = url.rsplit("/", 1)[1]
    engine_for.cache_clear()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_migrated(pg_server: Engine) -> Iterator[str]:
    """A migrated PostgreSQL database for the whole session."""
    url = create_pg_database(pg_server)
    migrations.upgrade(url)
    yield url
    drop_pg_database(pg_server, url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def own_store(request: pytest.FixtureRequest, root: Path) -> Iterator[str]:
    """A migrated feature store of a fixture's own, on the backend ``request.param`` names: a
    copy of the SQLite template under ``root``, or a PostgreSQL database made for it and
    dropped afterwards (for module-scoped fixtures that fill a store once)."""
    if request.param == "sqlite":
        path = root / "store.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    admin = request.getfixturevalue("pg_server")
    url = create_pg_database(admin)
    try:
        migrations.upgrade(url)
        yield url
    finally:
        drop_pg_database(admin, url)


def truncate_all(url: str) -> None:
    """Empty every table of the feature store."""
    engine = make_engine(url)
    try:
        names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a clean, migrated feature store, once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_migrated")
    truncate_all(url)
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at the clean database and a private models/data directory."""
    monkeypatch.setenv("SALESFC_DATABASE_URL", db_url)
    monkeypatch.setenv("SALESFC_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SALESFC_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    engine_for.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    for engine in list(_cached_engines()):
        engine.dispose()
    engine_for.cache_clear()


def _cached_engines() -> list[Engine]:
    # lru_cache exposes no values; the engine for the current URL is the one that matters.
    try:
        return [engine_for(get_settings().database_url)]
    except Exception:
        return []


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine on the clean database."""
    eng = make_engine(settings.database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def m5_path() -> Path:
    """The real m5_tiny file; tests that need it skip cleanly where it is absent."""
    if not M5_TINY.exists():
        pytest.skip(f"m5_tiny not found at {M5_TINY}")
    return M5_TINY
