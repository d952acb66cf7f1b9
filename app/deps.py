"""Request dependencies: the services on app.state and the API-key checks.

All are ``async def``: they do no I/O, and FastAPI runs a plain ``def`` dependency in the thread
pool, a thread hop per dependency per request (more than a cached forecast costs).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Protocol, TypeVar

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from sqlalchemy import Engine

from app.errors import ForbiddenApiKey, MissingApiKey
from app.services.champion import ChampionHolder
from app.services.forecasting import ForecastService
from featurestore.config import Settings
from training.registry import Registry

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)
# The dashboard's login form keeps the read key in this cookie (HttpOnly, SameSite=Strict): the
# pages' own requests to the read API carry it. Operations still need the header.
KEY_COOKIE = "salesfc_key"


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def key_allowed(given: str, keys: list[str]) -> bool:
    """Constant-time comparison against every configured key."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


def ops_keys(settings: Settings) -> list[str]:
    """The keys that may run operations."""
    return [k.get_secret_value() for k in settings.ops_api_keys]


def read_keys(settings: Settings) -> list[str]:
    """The keys that may read (ops keys included); no read key configured: reads are open.

    Ops keys alone protect operations only, so storefronts keep reading without a key.
    """
    keys = [k.get_secret_value() for k in settings.read_api_keys]
    return keys + ops_keys(settings) if keys else []


async def require_read_key(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    """Read endpoints need a read or ops key (header, or the dashboard's cookie) once a read
    key is configured."""
    keys = read_keys(request.app.state.settings)
    if not keys:
        return
    key = key or request.cookies.get(KEY_COOKIE)
    if not key:
        raise MissingApiKey("send an API key in the X-API-Key header")
    if not key_allowed(key, keys):
        raise ForbiddenApiKey("this API key is not allowed here")


async def require_ops_key(request: Request, key: Annotated[str | None, Depends(_api_key)]) -> None:
    """Operations (retrain, promote, rollback) always need an ops key."""
    keys = ops_keys(request.app.state.settings)
    if not key:
        raise MissingApiKey("send an ops API key in the X-API-Key header")
    if not keys or not key_allowed(key, keys):
        raise ForbiddenApiKey("this API key may not run operations")


async def require_ingest_key(
    request: Request, key: Annotated[str | None, Depends(_api_key)]
) -> None:
    """Pushing data needs a key with the ingest scope, or an ops key."""
    settings = request.app.state.settings
    keys = [k.get_secret_value() for k in settings.ingest_api_keys] + ops_keys(settings)
    if not key:
        raise MissingApiKey("send an ingest or ops API key in the X-API-Key header")
    if not keys or not key_allowed(key, keys):
        raise ForbiddenApiKey("this API key may not push data")


async def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def _forecast_service(request: Request) -> ForecastService:
    service: ForecastService = request.app.state.forecasts
    return service


async def _holder(request: Request) -> ChampionHolder:
    holder: ChampionHolder = request.app.state.champion
    return holder


async def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


EngineDep = Annotated[Engine, Depends(_engine)]
ForecastDep = Annotated[ForecastService, Depends(_forecast_service)]
HolderDep = Annotated[ChampionHolder, Depends(_holder)]
RegistryDep = Annotated[Registry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ReadKey = Depends(require_read_key)
OpsKey = Depends(require_ops_key)
IngestKey = Depends(require_ingest_key)


class _OnForecasts(Protocol):
    forecasts: ForecastService


S = TypeVar("S", bound=_OnForecasts)


def on_forecasts(
    name: str, make: Callable[[ForecastService], S]
) -> Callable[[Request], Awaitable[S]]:
    """A dependency giving the app's service ``name`` built over its ForecastService, made on
    first use and again whenever ``app.state.forecasts`` is replaced."""

    async def dependency(request: Request) -> S:
        state = request.app.state
        found: S | None = getattr(state, name, None)
        if found is None or found.forecasts is not state.forecasts:
            found = make(state.forecasts)
            setattr(state, name, found)
        return found

    return dependency
