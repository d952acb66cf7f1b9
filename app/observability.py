"""Prometheus metrics and structured JSON logs with a request id (keys are never logged)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog
from fastapi import FastAPI
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("salesfc_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "salesfc_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
FORECASTS = Counter("salesfc_forecasts_served_total", "SKU forecasts answered", ["source"])
MODEL = Gauge("salesfc_model_info", "The champion this worker serves", ["version"])
CACHE_ENTRIES = Gauge("salesfc_forecast_cache_entries", "Forecasts held in this worker's cache")
CACHE_BYTES = Gauge("salesfc_forecast_cache_bytes", "JSON bytes held in this worker's cache")
COALESCED = Histogram(
    "salesfc_coalesced_batch_skus",
    "SKUs per coalesced compute of single-SKU forecasts",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
JOBS = Counter("salesfc_job_outcomes_total", "Background job outcomes", ["kind", "status"])
LIVE_WAPE = Gauge("salesfc_live_wape", "The champion's WAPE over the last scored days", ["window"])
LIVE_BIAS = Gauge(
    "salesfc_live_bias", "The champion's bias sum(f - y) / sum(y), last scored days", ["window"]
)
LIVE_COVERAGE = Gauge(
    "salesfc_live_coverage", "Share of actuals in the champion's P10..P90", ["window"]
)
FALLBACK_ACTIVE = Gauge("salesfc_fallback_active", "1 while the fallback baseline is served")
FALLBACK_SKUS = Gauge("salesfc_fallback_skus", "SKUs served by the fallback baseline")
FALLBACKS = Counter(
    "salesfc_fallback_forecasts_total", "SKU forecasts made by the fallback baseline"
)
ORDER_LINES = Counter(
    "salesfc_order_lines_total", "Order lines pushed (POST /v1/orders)", ["outcome"]
)


def _add_pid(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    # With several workers, which process wrote a line is the first thing an operator asks.
    event["pid"] = os.getpid()
    return event


def configure_logging(level: str = "INFO") -> None:
    """JSON logs on stderr, one object per line, each with its process id."""
    logging.basicConfig(format="%(message)s", level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


def _route_name(scope: Scope) -> str:
    # The router records the matched route in the scope: its template keeps label counts bounded.
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class ObserveMiddleware:
    """Request id, access log and per-route metrics, as a pure ASGI middleware.

    Pure ASGI (not ``@app.middleware("http")``): the body passes through untouched, with no
    extra task and memory stream per request, which cost as much as a cached answer itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("salesfc.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
                break
        request_id = request_id or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = _route_name(scope)
            method = scope["method"]
            REQUESTS.labels(method, route, str(status)).inc()
            LATENCY.labels(method, route).observe(elapsed)
            if route != "/metrics":
                self.log.info(
                    "request",
                    method=method,
                    route=route,
                    status=status,
                    ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")


def install_middleware(app: FastAPI) -> None:
    """Request id, access log and per-route metrics for every request."""
    app.add_middleware(ObserveMiddleware)
