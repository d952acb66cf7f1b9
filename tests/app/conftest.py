"""A served store for the API tests: a small synthetic catalogue and a trained champion.

Building the store and training take seconds, so each backend gets one per test module, in a
database of its own; tests that change state (new data, promotions) put it back or use their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.main import create_app
from featurestore import migrations
from featurestore.config import Settings
from featurestore.db import make_engine
from tests.conftest import create_pg_database, drop_pg_database, own_store
from training.options import TrainOptions
from training.pipeline import train
from training.registry import Registry
from training.synth import SynthConfig, generate, write_catalogue

OPS_KEY = "ops-secret-key"
READ_KEY = "read-secret-key"
SMALL_TREES = {"n_estimators": 30, "num_leaves": 31, "min_data_in_leaf": 20}


@dataclass
class Served:
    """A loaded store, its settings and its first champion."""

    settings: Settings
    engine: Engine
    registry: Registry
    version: str


def small_options(**changes: object) -> TrainOptions:
    """Training options that keep API tests quick."""
    opts = TrainOptions(
        models=["seasonal_naive", "lgbm_tweedie"],
        strategy="direct",
        horizon=14,
        folds=1,
        model_params={"lgbm_tweedie": SMALL_TREES},
        cold_start_share=0.2,
    )
    for key, value in changes.items():
        setattr(opts, key, value)
    return opts


def build_served(url: str, models_dir: Path, n_skus: int = 16) -> Served:
    engine = make_engine(url)
    write_catalogue(engine, generate(SynthConfig(n_skus=n_skus, n_days=300, seed=11)))
    outcome = train(engine, models_dir, small_options())
    registry = Registry(models_dir)
    registry.promote(outcome.version, reason="test fixture")
    settings = Settings(
        database_url=url,
        models_dir=models_dir,
        read_api_keys=[READ_KEY],  # type: ignore[list-item]
        ops_api_keys=[OPS_KEY],  # type: ignore[list-item]
        max_horizon=14,
    )
    return Served(settings, engine, registry, outcome.version)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    with own_store(request, root) as url:
        result = build_served(url, root / "models")
        yield result
        result.engine.dispose()


@pytest.fixture
def client(served: Served) -> Iterator[TestClient]:
    with TestClient(create_app(served.settings)) as c:
        c.headers["X-API-Key"] = READ_KEY
        yield c


@pytest.fixture(scope="module")
def pg_served(pg_server: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A served store of the module's own on PostgreSQL (tests that cut its connection)."""
    url = create_pg_database(pg_server)
    try:
        migrations.upgrade(url)
        result = build_served(url, tmp_path_factory.mktemp("served") / "models")
        yield result
        result.engine.dispose()
    finally:
        drop_pg_database(pg_server, url)
