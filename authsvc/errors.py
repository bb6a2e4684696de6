"""Domain errors: each carries a stable machine code, an HTTP status and a message.

Nothing here imports FastAPI; ``authsvc.api.errors`` turns these into responses of the form
``{"detail": {"code": ..., "message": ...}}``.

    AuthsvcError
    ├── BadRequest            400
    │   └── OAuthError        400/401, RFC 6749 §5.2 ``error`` code as well
    ├── Unauthorized          401
    ├── Forbidden             403
    ├── NotFound              404
    ├── Conflict              409
    ├── PayloadTooLarge       413
    ├── InvalidInput          422
    ├── RateLimited           429  (carries ``retry_after`` seconds)
    └── ServiceUnavailable    503
"""

from __future__ import annotations

from typing import Any, ClassVar


class AuthsvcError(Exception):
    status_code: ClassVar[int] = 500
    default_code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(
        self, message: str, *, code: str | None = None, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.data = data or {}


class BadRequest(AuthsvcError):
    status_code = 400
    default_code = "BAD_REQUEST"


class OAuthError(BadRequest):
    """An error of the token endpoint, answered in the RFC 6749 §5.2 shape too."""

    def __init__(
        self,
        error: str,
        message: str,
        *,
        code: str | None = None,
        status_code: int = 400,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code or error.upper())
        self.error = error
        self.http_status = status_code
        # Extension members of the error body next to ``error`` (e.g. ``mfa_token``).
        self.extra = extra or {}


class Unauthorized(AuthsvcError):
    status_code = 401
    default_code = "UNAUTHORIZED"


class Forbidden(AuthsvcError):
    status_code = 403
    default_code = "FORBIDDEN"


class NotFound(AuthsvcError):
    status_code = 404
    default_code = "NOT_FOUND"


class Conflict(AuthsvcError):
    status_code = 409
    default_code = "CONFLICT"


class PayloadTooLarge(AuthsvcError):
    status_code = 413
    default_code = "PAYLOAD_TOO_LARGE"


class InvalidInput(AuthsvcError):
    status_code = 422
    default_code = "VALIDATION_ERROR"


class RateLimited(AuthsvcError):
    status_code = 429
    default_code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int, rule: str = "") -> None:
        super().__init__(message, data={"retry_after": retry_after})
        self.retry_after = retry_after
        self.rule = rule


class ServiceUnavailable(AuthsvcError):
    status_code = 503
    default_code = "SERVICE_UNAVAILABLE"
