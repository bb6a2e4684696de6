"""OpenAPI summaries for the routes fastapi-users builds, describing how authsvc behaves."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

_DOCS: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/register"): (
        "Register a user",
        "JSON `{email, password}` and nothing else (unknown or privileged fields: 422). The "
        "password policy's reason comes back as 400 `REGISTER_INVALID_PASSWORD`; a taken email "
        "as 400 `REGISTER_USER_ALREADY_EXISTS`. Limited per client IP.",
    ),
    ("POST", "/request-verify-token"): (
        "Send an email-verification token",
        "Always 202, whether or not the email exists. The token goes out through the "
        "configured notifier (SMTP, or stdout in development). Limited per client IP.",
    ),
    ("POST", "/verify"): (
        "Verify an email address with a token",
        "400 `VERIFY_USER_BAD_TOKEN` for an invalid or expired token, "
        "`VERIFY_USER_ALREADY_VERIFIED` when there is nothing to do.",
    ),
    ("POST", "/forgot-password"): (
        "Send a password-reset token",
        "Always 202, whether or not the email exists. The token goes out through the "
        "configured notifier and stops working once the password changes. Limited per IP.",
    ),
    ("POST", "/reset-password"): (
        "Set a new password with a reset token",
        "400 `RESET_PASSWORD_BAD_TOKEN` for an invalid, expired or used token; "
        "`RESET_PASSWORD_INVALID_PASSWORD` with the policy's reason.",
    ),
    ("GET", "/me"): ("The current user", "Needs a bearer access token."),
    ("PATCH", "/me"): (
        "Update the current user",
        "Email and password only. A new `password` needs the right `current_password` "
        "(401 `CURRENT_PASSWORD_INVALID`); `is_active`, `is_superuser` and `is_verified` "
        "cannot be changed on oneself (422 `USER_FIELD_READ_ONLY`).",
    ),
    ("GET", "/{id}"): ("Get a user (superuser)", "404 for an unknown or malformed id."),
    ("PATCH", "/{id}"): (
        "Update a user (superuser)",
        "May set `is_active`, `is_superuser`, `is_verified`, email and password.",
    ),
    ("DELETE", "/{id}"): ("Delete a user (superuser)", "204 on success, 404 if unknown."),
}


def describe(router: APIRouter) -> APIRouter:
    """Set summaries and descriptions on a fastapi-users router before it is included."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            docs = _DOCS.get((method, route.path))
            if docs is not None:
                route.summary, route.description = docs
    return router
