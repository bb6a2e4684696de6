"""The one place that turns errors into responses. No stack trace ever reaches a client."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from authsvc.api.deps import general_rate_limit, get_session, limit_by_ip
from authsvc.api.guards import get_principal, get_recent_principal, get_user_caller
from authsvc.errors import AuthsvcError, OAuthError, RateLimited, ServiceUnavailable, Unauthorized
from authsvc.schemas.tokens import OAuthErrorBody

log = logging.getLogger("authsvc.errors")


class ErrorDetail(BaseModel):
    """Every error answer's ``detail``: a stable code, a message, and sometimes more data."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorBody(BaseModel):
    detail: ErrorDetail


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorDetail(BaseModel):
    """A 422: ``VALIDATION_ERROR`` (with ``errors``, one per field) for a request the schema
    refuses, or a domain code (``PERMISSION_NAME_INVALID``, ``USER_CURSOR_INVALID``, ...) for
    one the rules behind the route refuse."""

    model_config = ConfigDict(extra="allow")
    code: str = "VALIDATION_ERROR"
    message: str
    errors: list[FieldError] | None = Field(
        default=None, description="With `VALIDATION_ERROR`: what is wrong, field by field."
    )


class ValidationErrorBody(BaseModel):
    """What a 422 really looks like here (FastAPI's default schema describes its own shape)."""

    detail: ValidationErrorDetail


# What each common status means, for the OpenAPI document.
_MEANING = {
    400: "Bad request",
    401: "Not authenticated: no, an invalid or an expired credential",
    403: "Refused: a permission or a policy (`PERMISSION_DENIED`, `POLICY_DENIED`, ...); "
    "`MFA_REQUIRED`: a second factor would allow it; `REAUTH_REQUIRED`: sign in again",
    404: "Not found",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Invalid input",
    429: "Rate limited (see `Retry-After`)",
    503: "The database is unreachable (`DATABASE_UNAVAILABLE`; see `Retry-After`)",
}


def error_responses(*statuses: int, oauth: bool = False) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: these statuses answer the error shape (RFC 6749's with
    ``oauth``). The statuses every route of a kind answers are added by
    ``document_error_shapes``; name here only what the route itself raises."""
    # The schema by reference (not ``model``): FastAPI would put a model under the route's own
    # media type, and an error is JSON even where the success answer is not.
    return {status: _described(status, "OAuthErrorBody" if oauth else "ErrorBody")
            for status in statuses}  # fmt: skip


def _dependency_calls(dependant: Dependant) -> set[Callable[..., Any]]:
    found: set[Callable[..., Any]] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call is not None:
            found.add(current.call)
        pending.extend(current.dependencies)
    return found


def _common_statuses(route: Any, operation: dict[str, Any]) -> list[int]:
    """The error statuses a route answers by the kind of route it is: what its dependencies
    and path can refuse. Derived from the route, so a new route is documented truthfully."""
    calls = _dependency_calls(route.dependant)
    per_ip = f"{limit_by_ip.__qualname__}.<locals>."  # the closures limit_by_ip makes
    statuses: list[int] = []
    if operation.get("security"):
        statuses.append(401)
    if get_principal in calls or get_user_caller in calls or get_recent_principal in calls:
        statuses.append(403)  # a missing permission; a service token on a user route
    if route.param_convertors:
        statuses.append(404)  # the resource the path names does not exist
    if route.body_field is not None:
        statuses.append(413)  # BodySizeLimit
    if general_rate_limit in calls or any(
        getattr(call, "__qualname__", "").startswith(per_ip) for call in calls
    ):
        statuses.append(429)
    if get_session in calls:
        statuses.append(503)
    return statuses


def document_error_shapes(
    schema: dict[str, Any], routes: Sequence[BaseRoute] = ()
) -> dict[str, Any]:
    """Describe the error answers in the OpenAPI document: every route's 422 is
    ``ValidationErrorBody`` (which also admits domain 422s), and each route of ``routes``
    documents the common error statuses it can answer (``_common_statuses``) with the shared
    ``ErrorBody``, unless it documents them itself."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ValidationErrorBody, ErrorBody):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in body.pop("$defs", {}).items():
            components[name] = definition
        components[model.__name__] = body
    # FastAPI points every 422 at its own HTTPValidationError: make that name say ours.
    components["HTTPValidationError"] = components.pop("ValidationErrorBody")
    components.pop("ValidationError", None)
    components.setdefault("OAuthErrorBody", OAuthErrorBody.model_json_schema())
    paths = schema.get("paths", {})
    # Routes of included routers are reached through their contexts (with the router's
    # prefix and dependencies), as FastAPI's own OpenAPI generator does.
    for route in iter_route_contexts(routes):
        if route.endpoint is None or not route.include_in_schema or not route.path_format:
            continue
        for method in route.methods or ():
            operation = paths.get(route.path_format, {}).get(method.lower())
            if operation is None:
                continue
            answers = operation.setdefault("responses", {})
            for status in _common_statuses(route, operation):
                answers.setdefault(str(status), _described(status))
            operation["responses"] = dict(sorted(answers.items()))
    return schema


def _described(status: int, model: str = "ErrorBody") -> dict[str, Any]:
    return {
        "description": _MEANING.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
    }


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
            **getattr(exc, "extra", {}),  # LoginThrottled sets its attributes itself
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


# fastapi-users answers its errors with a bare code (or a code and a reason): the message
# each gets in our shape.
_FASTAPI_USERS_MESSAGES = {
    "REGISTER_USER_ALREADY_EXISTS": "An account with this email exists.",
    "REGISTER_INVALID_PASSWORD": "The password does not meet the password policy.",
    "LOGIN_BAD_CREDENTIALS": "The email or password is wrong.",
    "LOGIN_USER_NOT_VERIFIED": "The email address is not verified yet.",
    "RESET_PASSWORD_BAD_TOKEN": "The reset token is invalid, expired or already used.",
    "RESET_PASSWORD_INVALID_PASSWORD": "The password does not meet the password policy.",
    "VERIFY_USER_BAD_TOKEN": "The verification token is invalid or expired.",
    "VERIFY_USER_ALREADY_VERIFIED": "The email address is already verified.",
    "UPDATE_USER_EMAIL_ALREADY_EXISTS": "Another account uses this email.",
    "UPDATE_USER_INVALID_PASSWORD": "The password does not meet the password policy.",
}
_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}
# FastAPI's answer to a body it cannot read (not UTF-8, ...); invalid JSON is already a 422.
_UNREADABLE_BODY = "There was an error parsing the body"


def _http_detail(status: int, detail: Any) -> tuple[str, str, dict[str, Any]]:
    """Code, message and extra data for a Starlette/FastAPI/fastapi-users ``HTTPException``."""
    fallback = _STATUS_CODES.get(status, "HTTP_ERROR")
    if isinstance(detail, dict) and isinstance(detail.get("code"), str):
        code = _plain(detail["code"])
        extra = {k: v for k, v in detail.items() if k not in ("code", "message")}
        reason = detail.get("message") or detail.get("reason")
        message = str(reason) if reason else _FASTAPI_USERS_MESSAGES.get(code, code)
        return code, message, extra
    if isinstance(detail, str) and _plain(detail) in _FASTAPI_USERS_MESSAGES:
        return _plain(detail), _FASTAPI_USERS_MESSAGES[_plain(detail)], {}
    return fallback, str(detail) if detail else fallback.replace("_", " ").capitalize(), {}


def _plain(value: str) -> str:
    """fastapi-users' codes are ``str`` enums; ``str()`` of one is its name, not its value."""
    return str(value.value) if isinstance(value, Enum) else str(value)


def _allowed_methods(request: Request) -> str:
    """RFC 9110 §15.5.6: a 405 lists every method the target supports. Starlette lists only
    the methods of the first route whose path matched; ours may be split over several."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        route_methods = route.methods
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(route_methods)
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status, headers = exc.status_code, dict(exc.headers or {})
    if status == 400 and exc.detail == _UNREADABLE_BODY:
        # Malformed input like invalid JSON, which FastAPI answers with a 422: say it the same way.
        reason = "The body is not readable JSON."
        where = {"loc": ["body"], "msg": reason, "type": "json_invalid"}
        return error_response(422, "VALIDATION_ERROR", f"body: {reason}", errors=[where])
    if status == 401 and "WWW-Authenticate" not in headers:
        # RFC 6750 §3: a 401 from a bearer-protected route names the scheme.
        headers["WWW-Authenticate"] = _bearer_challenge(request)
    if status == 405:
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
    code, message, extra = _http_detail(status, exc.detail)
    return error_response(status, code, message, headers=headers or None, **extra)


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
