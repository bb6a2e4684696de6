"""``POST /auth/token``: the OAuth2 password grant (RFC 6749 §4.3) and refresh (§6);
``POST /auth/revert-email``: undo an email change from the old address."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep, UserManagerDep
from authsvc.api.errors import error_responses
from authsvc.db.models import Session, User
from authsvc.errors import OAuthError
from authsvc.schemas.tokens import OAuthErrorBody, TokenResponse
from authsvc.schemas.users import RevertEmailRequest
from authsvc.security.identifiers import normalize_email
from authsvc.services import clients
from authsvc.services.container import AppServices
from authsvc.services.roles import grants_for
from authsvc.services.sessions import SessionService

router = APIRouter(tags=["auth"])

_MAX_USERNAME = 320
_MAX_PASSWORD = 4096
_MAX_REFRESH = 256
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


def _required(name: str, value: str | None, max_length: int) -> str:
    if not value:
        raise OAuthError("invalid_request", f"The {name} parameter is required.")
    if len(value) > max_length:
        raise OAuthError("invalid_request", f"The {name} parameter is too long.")
    return value


async def _token_response(
    services: AppServices,
    db: SessionDep,
    user: User,
    session: Session,
    refresh_token: str,
    grant: str,
) -> JSONResponse:
    services.metrics.tokens.labels(grant).inc()
    grants = await grants_for(db, user)
    issued = services.codec.issue(
        str(user.id),
        extra={
            "roles": grants.roles,
            "permissions": grants.permissions,
            "ver": grants.version,
            "sid": str(session.id),
        },
    )
    body = TokenResponse(
        access_token=issued.token, expires_in=issued.expires_in, refresh_token=refresh_token
    )
    return JSONResponse(body.model_dump(), headers=_NO_STORE)


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Get tokens (OAuth2 password grant, or refresh)",
    description=(
        "Form-encoded. `grant_type=password` with `username` (the email) and `password` starts a "
        "session; `grant_type=client_credentials` (HTTP Basic or `client_id`/`client_secret`) "
        "issues a service token; `grant_type=refresh_token` with `refresh_token` rotates a "
        "session: the presented "
        "token is spent and a new pair is returned. A spent refresh token presented again "
        "within a short grace window (parallel tabs) gets a new pair a bounded number of times "
        "(then 400 `REFRESH_TOKEN_REUSE_LIMIT`); after the window it revokes the whole "
        "session (`REFRESH_TOKEN_REUSED`). Answers an RFC 6749 §5.1 "
        "token response; errors use the §5.2 shape: `invalid_request`, "
        "`unsupported_grant_type`, `invalid_grant`. Limited per client IP and per submitted "
        "username (429 with Retry-After)."
    ),
    responses={400: {"model": OAuthErrorBody}, 429: {"description": "Too many attempts."}},
)
async def token(
    request: Request,
    services: ServicesDep,
    db: SessionDep,
    user_manager: UserManagerDep,
    ip: ClientIP,
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    refresh_token: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
    scope: Annotated[str, Form()] = "",
) -> JSONResponse:
    grant = _required("grant_type", grant_type, 64)
    if grant == "client_credentials":
        given = clients.credentials(request.headers.get("authorization"), client_id, client_secret)
        if given is None:
            raise clients.invalid_client()
        services.limiter.hit(services.rules.login_ip, ip)
        client = await clients.authenticate(db, *given)
        issued = services.codec.issue(
            client.id,
            client_id=client.id,
            extra={"roles": [], "permissions": client.permissions, "ver": 0},
        )
        services.metrics.tokens.labels(grant).inc()
        # RFC 6749 §4.4.3: no refresh token for the client credentials grant.
        body = TokenResponse(access_token=issued.token, expires_in=issued.expires_in)
        return JSONResponse(body.model_dump(exclude_none=True), headers=_NO_STORE)
    sessions = SessionService(db, services.session_policy)
    if grant == "refresh_token":
        presented = _required("refresh_token", refresh_token, _MAX_REFRESH)
        services.limiter.hit(services.rules.login_ip, ip)
        refreshed = await sessions.rotate(presented)
        return await _token_response(
            services, db, refreshed.user, refreshed.session, refreshed.refresh_token, grant
        )
    if grant != "password":
        raise OAuthError("unsupported_grant_type", f"Grant type {grant[:64]!r} is not supported.")
    email = _required("username", username, _MAX_USERNAME)
    secret = _required("password", password, _MAX_PASSWORD)

    # Counted before the password is checked: the limits also shield the hasher.
    services.limiter.hit(services.rules.login_ip, ip)
    # The key the account lookup matches on (UserDatabase.get_by_email): every spelling that
    # reaches an account counts against that account's limit.
    services.limiter.hit(services.rules.login_username, normalize_email(email))

    user = await user_manager.authenticate(
        OAuth2PasswordRequestForm(username=email, password=secret, scope=scope)
    )
    if user is None or not user.is_active:
        services.metrics.logins.labels("failure").inc()
        # One answer for unknown email, wrong password and inactive account.
        raise OAuthError(
            "invalid_grant", "Incorrect email or password.", code="LOGIN_BAD_CREDENTIALS"
        )
    session, new_refresh = await sessions.start(user, ip, request.headers.get("user-agent"))
    await user_manager.on_after_login(user, request)
    services.metrics.logins.labels("success").inc()
    return await _token_response(services, db, user, session, new_refresh, grant)


@router.post(
    "/revert-email",
    status_code=204,
    summary="Undo an email change (token sent to the old address)",
    description=(
        "A self-service email change sends the old address a notice with a token. Posting it "
        "restores the old address (verified), ends every session of the account and answers "
        "204; then reset the password through the old address. 400 `REVERT_EMAIL_BAD_TOKEN` "
        "for an invalid, expired or used token, or one of an earlier change; 409 "
        "`REVERT_EMAIL_ADDRESS_TAKEN` when another account took the old address meanwhile. "
        "Recorded in the audit trail."
    ),
    responses=error_responses(400, 409),
)
async def revert_email(body: RevertEmailRequest, user_manager: UserManagerDep) -> Response:
    await user_manager.revert_email(body.token)
    return Response(status_code=204)
