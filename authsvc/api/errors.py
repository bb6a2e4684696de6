"""The one place that turns errors into responses. No stack trace ever reaches a client."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from authsvc.errors import AuthsvcError, OAuthError, RateLimited, ServiceUnavailable, Unauthorized

log = logging.getLogger("authsvc.errors")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    detail: ErrorDetail


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorDetail(BaseModel):
    code: str = "VALIDATION_ERROR"
    message: str
    errors: list[FieldError]


class ValidationErrorBody(BaseModel):
    """What a 422 really looks like here (FastAPI's default schema describes its own shape)."""

    detail: ValidationErrorDetail


def document_error_shapes(schema: dict[str, Any]) -> dict[str, Any]:
    """Point every route's 422 at ``ValidationErrorBody`` in the OpenAPI document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "HTTPValidationError" not in components:
        return schema
    body = ValidationErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in body.pop("$defs", {}).items():
        components[name] = definition
    components["HTTPValidationError"] = body
    components.pop("ValidationError", None)
    return schema


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    detail: dict[str, Any] = {"code": code, "message": message, **extra}
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthsvcError)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
        services = getattr(request.app.state, "services", None)
        if services is not None:
            services.metrics.rate_limited.labels(exc.rule or "unknown").inc()
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = "5"  # an outage of ours: RFC 9110 §10.2.3
    if isinstance(exc, OAuthError):
        # RFC 6749 §5.2 body, plus our usual detail; token responses are never cached.
        body = {
            "error": exc.error,
            "error_description": exc.message,
            "detail": {"code": exc.code, "message": exc.message},
        }
        headers.update({"Cache-Control": "no-store", "Pragma": "no-cache"})
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="authsvc"'
        return JSONResponse(body, status_code=exc.http_status, headers=headers)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = _bearer_challenge(request)
    return error_response(exc.status_code, exc.code, exc.message, headers=headers, **exc.data)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    # Pydantic echoes the offending input; that may be a password, so only keep where and why.
    return [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": err.get("type")}
        for err in errors
    ]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_errors(exc.errors())
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    reason = str(first["msg"])
    return error_response(
        422, "VALIDATION_ERROR", f"{where}: {reason}" if where else reason, errors=errors
    )


def _bearer_challenge(request: Request) -> str:
    """RFC 6750 §3.1: ``error="invalid_token"`` when a token came and was refused; a bare
    challenge when none came."""
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return 'Bearer error="invalid_token"'
    return "Bearer"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 401 and not (exc.headers or {}).get("WWW-Authenticate"):
        # RFC 6750 §3: a 401 from a bearer-protected route names the scheme.
        challenge = _bearer_challenge(request)
        exc = StarletteHTTPException(
            401, exc.detail, headers={**(exc.headers or {}), "WWW-Authenticate": challenge}
        )
    return await http_exception_handler(request, exc)


def _database_unreachable(exc: BaseException) -> bool:
    """Errors that mean "the database is not there right now", not "we have a bug"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        if isinstance(seen, OperationalError | InterfaceError | PoolTimeout | ConnectionError):
            return True
        if type(seen).__module__.startswith("asyncpg") and "Connection" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unavailable(request: Request, exc: BaseException) -> JSONResponse:
    # An outage, not a bug: say so with a stable code, and let the client retry.
    log.warning("database unreachable on %s %s: %s", request.method, request.url.path,
                type(exc).__name__)  # fmt: skip
    return error_response(
        503,
        "DATABASE_UNAVAILABLE",
        "The database is not reachable; try again shortly.",
        headers={"Retry-After": "5"},
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if _database_unreachable(exc):
        return _unavailable(request, exc)
    return await _unexpected(request, exc)


async def _concurrent_change(request: Request, exc: Exception) -> JSONResponse:
    # The row this request read was changed or deleted by another one before it wrote (the
    # UPDATE or DELETE matched nothing): a conflict to retry after reloading, not a bug. The
    # session's transaction is rolled back when the request's session closes: nothing written.
    log.info("concurrent change on %s %s: %s", request.method, request.url.path,
             type(exc).__name__)  # fmt: skip
    return error_response(
        409,
        "CONCURRENT_CHANGE",
        "Another request changed or deleted this at the same time; reload it and try again.",
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if _database_unreachable(exc):
        return _unavailable(request, exc)
    log.error(
        "unhandled error on %s %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )
    return error_response(500, "INTERNAL_ERROR", "An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AuthsvcError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Handled here (not by the catch-all), so an outage is not re-raised and logged as a crash.
    for outage in (OperationalError, InterfaceError, PoolTimeout, ConnectionError):
        app.add_exception_handler(outage, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for lost_race in (StaleDataError, ObjectDeletedError):
        app.add_exception_handler(lost_race, _concurrent_change)
    app.add_exception_handler(Exception, _unexpected)
