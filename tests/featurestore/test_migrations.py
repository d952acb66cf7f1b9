"""Migrations run up and down on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from featurestore import migrations
from featurestore.tables import Base
from tests.conftest import create_pg_database, drop_pg_database

EXPECTED = set(Base.metadata.tables)


def _round_trip(url: str) -> None:
    assert migrations.current_tables(url) == set()
    migrations.upgrade(url)
    assert migrations.current_tables(url) == EXPECTED
    migrations.downgrade(url, "base")
    assert migrations.current_tables(url) == set()
    migrations.upgrade(url)
    assert migrations.current_tables(url) == EXPECTED


def test_sqlite_up_down_up(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'm.db'}")


def test_postgresql_up_down_up(pg_server: Engine) -> None:
    url = create_pg_database(pg_server)
    try:
        _round_trip(url)
    finally:
        drop_pg_database(pg_server, url)


def test_models_match_migrations(db_url: str) -> None:
    """Autogenerate finds nothing to do: the ORM and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from featurestore.db import make_engine

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], diff


@pytest.mark.parametrize("bad", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_plain_postgres_urls_use_psycopg(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from featurestore.config import Settings

    monkeypatch.setenv("SALESFC_DATABASE_URL", bad)
    assert Settings().database_url.startswith("postgresql+psycopg://")
