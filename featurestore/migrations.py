"""Run the feature store's Alembic migrations from code (the CLI and the tests use this)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import inspect

from alembic import command
from featurestore.db import make_engine

ROOT = Path(__file__).resolve().parents[1]


def alembic_config(url: str) -> Config:
    """An Alembic config for the project's migrations pointed at ``url``."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "-1") -> None:
    """Migrate the database at ``url`` down to ``revision`` ("base" removes every table)."""
    command.downgrade(alembic_config(url), revision)


def current_tables(url: str) -> set[str]:
    """Tables that exist in the database, without Alembic's own bookkeeping table."""
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
