"""One error family for the service and its one handler: every failure is {error, detail}."""

from __future__ import annotations

from typing import Any

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


class DatabaseUnavailable(SalesfcError):
    status_code = 503
    code = "database_unavailable"


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


def install_handlers(app: FastAPI) -> None:
    """Turn every failure into {error, detail} with the right status code."""

    @app.exception_handler(SalesfcError)
    async def _salesfc(_: Request, exc: SalesfcError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.detail), status_code=exc.status_code)

    async def _lower(_: Request, exc: Exception) -> JSONResponse:
        status, code = next(LOWER_ERRORS[t] for t in type(exc).__mro__ if t in LOWER_ERRORS)
        return JSONResponse(error_body(code, str(exc)), status_code=status)

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

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)  # every pooled connection busy past db_pool_timeout_s
    async def _database(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            error_body("database_unavailable", "the feature store database is unreachable"),
            status_code=503,
        )
