"""``GET /v1/forecast/{sku}`` answered from the worker's cache in front of FastAPI.

A cached answer costs less than FastAPI's routing and dependency solving for it, so this ASGI
middleware serves cache hits itself, with the route's key check and parameter parsing. Anything
else (a miss, a parameter not plainly valid, a missing or wrong key) goes on to the route, which
validates, computes, answers errors and documents the endpoint.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.deps import key_allowed, read_keys
from app.schemas import parse_query
from app.services.forecasting import ForecastService

PREFIX = "/v1/forecast/"


class _RouteLabel:
    """What the metrics middleware reads from scope["route"] for answers given by the lane."""

    path = "/v1/forecast/{sku}"


class StoredForecastLane:
    """The ASGI middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = cached(scope)
            if body is not None:
                scope["route"] = _RouteLabel
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
    if not path.startswith(PREFIX):
        return None
    sku = path[len(PREFIX) :]
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
    params = parse_query(scope["query_string"])
    if params is None:
        return None
    return service.cached_json([sku], *params)
