"""``GET /v1/forecast/{sku}`` and ``GET /v1/inventory/{sku}`` answered from the worker's cache
in front of FastAPI.

A cached answer costs less than FastAPI's routing and dependency solving for it, so this ASGI
middleware serves cache hits itself, with the route's key check and parameter parsing. Anything
else (a miss, a parameter not plainly valid, a missing or wrong key) goes on to the route, which
validates, computes, answers errors and documents the endpoint.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.deps import key_allowed, read_keys
from app.schemas import InventoryItem, parse_pairs, parse_query
from app.services.forecasting import ForecastService
from app.services.inventory import InventoryService

PREFIX = "/v1/forecast/"
INVENTORY = "/v1/inventory/"


class _RouteLabel:
    """What the metrics middleware reads from scope["route"] for answers given by the lane."""

    def __init__(self, path: str) -> None:
        self.path = path


_LABELS = {PREFIX: _RouteLabel("/v1/forecast/{sku}"), INVENTORY: _RouteLabel("/v1/inventory/{sku}")}


class StoredForecastLane:
    """The ASGI middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = cached(scope)
            if body is not None:
                scope["route"] = _LABELS[PREFIX if scope["path"].startswith(PREFIX) else INVENTORY]
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def cached(scope: Scope) -> bytes | None:
    """The cached answer to this request, or None (for the route to answer)."""
    path: str = scope["path"]
    prefix = PREFIX if path.startswith(PREFIX) else INVENTORY if path.startswith(INVENTORY) else ""
    if not prefix:
        return None
    sku = path[len(prefix) :]
    if not sku or "/" in sku or len(sku) > 64:
        return None
    state = scope["app"].state
    service: ForecastService | None = getattr(state, "forecasts", None)
    if service is None:
        return None
    keys = read_keys(state.settings)
    if keys:
        given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
        if given is None or not key_allowed(given.decode("latin-1"), keys):
            return None
    if prefix == INVENTORY:
        return _decision(state, service, sku, scope["query_string"])
    params = parse_query(scope["query_string"])
    if params is None:
        return None
    return service.cached_json([sku], *params)


def _decision(state: Any, service: ForecastService, sku: str, raw: bytes) -> bytes | None:
    """A remembered inventory decision with this request's stock, or None."""
    inventory: InventoryService | None = getattr(state, "inventory", None)
    pairs = parse_pairs(raw)
    if inventory is None or inventory.forecasts is not service or pairs is None:
        return None
    pairs.pop("sku", None)  # the path's SKU is the one asked for, as in the route
    try:
        item = InventoryItem(sku=sku, **pairs)
    except ValidationError:
        return None
    decision = inventory.cached(item)
    return None if decision is None else orjson.dumps(decision)
