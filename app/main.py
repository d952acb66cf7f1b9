"""The FastAPI application: create_app builds it, the lifespan loads the store and the champion."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.errors import install_handlers
from app.limits import BodyLimit
from app.observability import configure_logging, install_middleware
from app.routes import (
    accuracy,
    aggregate,
    dashboard,
    export,
    forecast,
    health,
    inventory,
    jobs,
    models,
    orders,
)
from app.services.champion import ChampionHolder
from app.services.forecasting import ForecastService
from app.services.lane import StoredForecastLane
from featurestore.config import Settings, get_settings
from featurestore.db import make_engine
from training.registry import Registry


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; heavy things (engine, bundle) load in the lifespan, not at import."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or get_settings()
        # Each uvicorn worker is a fresh process: it sets up the JSON logs itself.
        configure_logging(cfg.log_level)
        engine = make_engine(cfg.database_url, cfg, service=True)
        registry = Registry(cfg.models_dir)
        holder = ChampionHolder(registry)
        holder.current()
        app.state.settings = cfg
        app.state.engine = engine
        app.state.registry = registry
        app.state.champion = holder
        app.state.forecasts = ForecastService(
            engine,
            holder,
            cfg.quantiles,
            use_cache=cfg.forecast_cache,
            window_bytes=cfg.serve_window_mb << 20,
        )
        # What is loaded now lives as long as the worker: frozen, full collections skip it
        # (a stall in the p99 otherwise, see docs/operations.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="salesfc",
        summary="Per-SKU sales forecasts with quantiles, what-if scenarios and explanations.",
        version="0.1.0",
        lifespan=lifespan,
        # No redirect to a slash-less path: it would be built from the Host header (an open
        # redirect) and a client's wrong path deserves a plain 404.
        redirect_slashes=False,
    )
    install_handlers(app)
    # Bodies are bounded before they are read (GETs pass straight through, behind the lane).
    app.add_middleware(BodyLimit)
    # Cached single-SKU forecasts are answered in front of the router (inside the access log).
    app.add_middleware(StoredForecastLane)
    install_middleware(app)
    # aggregate before forecast: GET /v1/forecast/{sku} would take /v1/forecast/aggregate.
    app.include_router(aggregate.router)
    for module in (health, forecast, export, models, jobs, inventory, orders, accuracy):
        app.include_router(module.router)
    app.include_router(dashboard.router)
    return app
