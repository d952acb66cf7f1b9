"""One error family for the service and its one handler: every failure is {error, detail}."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from training.registry import UnknownVersion


class ErrorBody(BaseModel):
    """What every failed request answers."""

    error: str = Field(examples=["unknown_sku"])
    detail: Any = Field(examples=["no SKU named FOODS_3_999_CA_1"])


class SalesfcError(Exception):
    """Base of every error the API answers; carries an HTTP status and a stable code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnknownSku(SalesfcError):
    status_code = 404
    code = "unknown_sku"


class NotFound(SalesfcError):
    status_code = 404
    code = "not_found"


class InvalidRequest(SalesfcError):
    status_code = 422
    code = "invalid_request"


class AsOfAfterData(SalesfcError):
    """A forecast origin after the store's last sales day (nothing known about the days between)."""

    status_code = 422
    code = "as_of_after_data"


class SkuDiscontinued(SalesfcError):
    status_code = 422
    code = "sku_discontinued"


class InsufficientHistory(SalesfcError):
    status_code = 422
    code = "insufficient_history"


class HorizonOutOfRange(SalesfcError):
    status_code = 422
    code = "horizon_out_of_range"


class MissingApiKey(SalesfcError):
    status_code = 401
    code = "missing_api_key"


class ForbiddenApiKey(SalesfcError):
    status_code = 403
    code = "forbidden"


class Conflict(SalesfcError):
    status_code = 409
    code = "conflict"


class ModelNotReady(SalesfcError):
    status_code = 503
    code = "model_not_ready"


class PayloadTooLarge(SalesfcError):
    status_code = 413
    code = "payload_too_large"


class DatabaseUnavailable(SalesfcError):
    """The database cannot be reached (or gives no connection in time): transient, retry."""

    status_code = 503
    code = "database_unavailable"


class PushLost(SalesfcError):
    """The process storing pushed lines ended mid-push: nothing of the batch was stored."""

    status_code = 503
    code = "push_lost"


class DatabaseError(SalesfcError):
    """Any other database failure: a fault of ours, logged with the request id."""

    status_code = 500
    code = "database_error"


# SQLSTATE classes of a connection that failed or was taken away (PostgreSQL): connection
# exception, operator intervention (shutdown, admin cancel), too many connections.
_UNREACHABLE_STATES = ("08", "57P", "53300")
# sqlite3 says OperationalError for every failure; these mean the file cannot be used right now.
_SQLITE_UNREACHABLE = ("unable to open database file", "database is locked", "disk I/O error")


def database_unreachable(exc: Exception) -> bool:
    """Whether a database error means "cannot reach it now" (503) rather than a fault (500)."""
    if isinstance(exc, PoolTimeout):
        return True  # no pooled connection came free in time
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False  # DataError, IntegrityError, ProgrammingError ...: the statement's fault
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return any(m in str(orig) for m in _SQLITE_UNREACHABLE)
    state = getattr(orig, "sqlstate", None)
    # psycopg raises a bare OperationalError, without SQLSTATE, when no connection is made.
    return state is None or str(state).startswith(_UNREACHABLE_STATES)


# Errors the lower layers raise, answered with this status and code: they know nothing of HTTP.
LOWER_ERRORS: dict[type[Exception], tuple[int, str]] = {
    UnknownVersion: (404, "unknown_model_version"),
}


def _status(err: type[Exception]) -> tuple[int, str]:
    if issubclass(err, SalesfcError):
        return err.status_code, err.code
    return LOWER_ERRORS[err]


def error_body(code: str, detail: Any) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": code, "detail": detail}


def responses(*errors: type[Exception]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the errors a route may answer."""
    out: dict[int | str, dict[str, Any]] = {}
    for err in errors:
        status, code = _status(err)
        entry = out.setdefault(status, {"description": "", "model": ErrorBody})
        entry["description"] = ", ".join(filter(None, [entry["description"], code]))
    return out


def scrub_paths(detail: str, request: Request) -> str:
    """The detail without the server's directories (the registry names its folder, say)."""
    settings = getattr(request.app.state, "settings", None)
    if settings is None:
        return detail
    for name in ("models_dir", "data_dir"):
        folder = getattr(settings, name, None)
        if folder is None:
            continue
        absolute = str(Path(folder).resolve())
        if absolute != "/":
            detail = detail.replace(absolute, f"<{name}>")
        relative = str(folder)
        if relative not in {".", "/", absolute}:
            # A relative folder ("data") only as the start of a path: not the word in a sentence.
            pattern = rf"(?<![\w./-]){re.escape(relative)}(?=/)"
            detail = re.sub(pattern, f"<{name}>", detail)
    return detail


def install_handlers(app: FastAPI) -> None:
    """Turn every failure into {error, detail} with the right status code."""
    log = structlog.get_logger("salesfc.errors")

    @app.exception_handler(SalesfcError)
    async def _salesfc(request: Request, exc: SalesfcError) -> JSONResponse:
        detail = scrub_paths(exc.detail, request) if isinstance(exc.detail, str) else exc.detail
        return JSONResponse(error_body(exc.code, detail), status_code=exc.status_code)

    async def _lower(request: Request, exc: Exception) -> JSONResponse:
        status, code = next(LOWER_ERRORS[t] for t in type(exc).__mro__ if t in LOWER_ERRORS)
        return JSONResponse(error_body(code, scrub_paths(str(exc), request)), status_code=status)

    for err in LOWER_ERRORS:
        app.add_exception_handler(err, _lower)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(error_body("invalid_request", detail), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, exc.detail), status_code=exc.status_code)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)  # every pooled connection busy past db_pool_timeout_s
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        # The request id is bound to the log context by app.observability; the answer names it
        # so an operator can find the logged line (with the statement), the answer shows none.
        request_id = structlog.contextvars.get_contextvars().get("request_id", "")
        if database_unreachable(exc):
            log.warning("database unreachable", error=type(exc).__name__)
            err: SalesfcError = DatabaseUnavailable("the feature store database is unreachable")
        else:
            log.error("database error", error=type(exc).__name__, exc_info=exc)
            err = DatabaseError(
                f"the feature store failed on this request (request id {request_id})"
            )
        return JSONResponse(error_body(err.code, err.detail), status_code=err.status_code)


class InvalidLines(SalesfcError):
    """Lines of a pushed batch failed validation: ``detail`` lists each (index, column, reason)."""

    status_code = 422
    code = "invalid_lines"

    def __init__(self, message: str, lines: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.detail = {"message": message, "lines": lines}  # type: ignore[assignment]
