"""``POST /auth/token``: the OAuth2 resource-owner password grant (RFC 6749 §4.3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep, UserManagerDep
from authsvc.errors import OAuthError
from authsvc.schemas.tokens import OAuthErrorBody, TokenResponse
from authsvc.services.authz import grants_for

router = APIRouter(tags=["auth"])

_MAX_USERNAME = 320
_MAX_PASSWORD = 4096
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


def _required(name: str, value: str | None, max_length: int) -> str:
    if not value:
        raise OAuthError("invalid_request", f"The {name} parameter is required.")
    if len(value) > max_length:
        raise OAuthError("invalid_request", f"The {name} parameter is too long.")
    return value


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Get an access token (OAuth2 password grant)",
    description=(
        "Form-encoded `grant_type=password`, `username` (the email) and `password`. Answers an "
        "RFC 6749 §5.1 token response. Errors use the RFC 6749 §5.2 shape: `invalid_request`, "
        "`unsupported_grant_type`, `invalid_grant` (wrong email or password, or an inactive "
        "account). Limited per client IP and per submitted username (429 with Retry-After)."
    ),
    responses={400: {"model": OAuthErrorBody}, 429: {"description": "Too many attempts."}},
)
async def token(
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    user_manager: UserManagerDep,
    ip: ClientIP,
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    scope: Annotated[str, Form()] = "",
) -> JSONResponse:
    grant = _required("grant_type", grant_type, 64)
    if grant != "password":
        raise OAuthError("unsupported_grant_type", f"Grant type {grant[:64]!r} is not supported.")
    email = _required("username", username, _MAX_USERNAME)
    secret = _required("password", password, _MAX_PASSWORD)

    # Counted before the password is checked: the limits also shield the hasher.
    services.limiter.hit(services.rules.login_ip, ip)
    services.limiter.hit(services.rules.login_username, email.strip().lower())

    user = await user_manager.authenticate(
        OAuth2PasswordRequestForm(username=email, password=secret, scope=scope)
    )
    if user is None or not user.is_active:
        # One answer for unknown email, wrong password and inactive account.
        raise OAuthError(
            "invalid_grant", "Incorrect email or password.", code="LOGIN_BAD_CREDENTIALS"
        )
    grants = await grants_for(session, user)
    issued = services.codec.issue(
        str(user.id),
        extra={"roles": grants.roles, "permissions": grants.permissions, "ver": grants.version},
    )
    await user_manager.on_after_login(user, request)
    body = TokenResponse(access_token=issued.token, expires_in=issued.expires_in)
    return JSONResponse(body.model_dump(), headers=_NO_STORE)
