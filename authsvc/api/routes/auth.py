"""``POST /auth/token``: the OAuth2 token endpoint (RFC 6749 §3.2), dispatching to the grant
registry (``services.grants``); ``POST /auth/revert-email``: undo an email change from the old
address."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep, UserManagerDep
from authsvc.api.errors import error_responses
from authsvc.schemas.tokens import OAuthErrorBody, TokenResponse
from authsvc.schemas.users import RevertEmailRequest
from authsvc.security.device_tokens import DeviceTokenCodec
from authsvc.services.grants import GrantContext, token_request
from authsvc.services.issuer import TokenIssuer
from authsvc.services.throttle import ThrottleRules

router = APIRouter(tags=["auth"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 §5.1


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
        "`unsupported_grant_type`, `invalid_grant`; with a correct password for an account "
        "whose address is not verified yet (`AUTHSVC_REQUIRE_VERIFIED_EMAIL`), `invalid_grant` "
        "with code `EMAIL_NOT_VERIFIED`. Limited per client IP and, without a valid device "
        "token, per submitted username (429 `RATE_LIMITED` with Retry-After). Password "
        "sign-ins are also throttled per account: after "
        "`AUTHSVC_LOGIN_THROTTLE_THRESHOLD` consecutive failures the next attempt waits 1 s, "
        "2 s, 4 s ... up to `AUTHSVC_LOGIN_THROTTLE_MAX_DELAY_SECONDS` (429 `invalid_grant`, "
        "code `LOGIN_THROTTLED`, Retry-After; not evaluated), and after "
        "`AUTHSVC_LOGIN_MAX_CONSECUTIVE_FAILURES` it is locked (429 `LOGIN_LOCKED`) until a "
        "password reset or an administrator's unlock. A successful password sign-in returns a "
        "`device_token`; sent back as the `device_token` field, it exempts that device from the "
        "account's throttle and from the per-username limit (its own failures count instead). "
        "An invalid or foreign device token is ignored.\n\n"
        "Second factor: for an account with a confirmed authenticator app, the right password "
        "answers 400 `mfa_required` (code `MFA_REQUIRED`) with an `mfa_token` and no tokens. "
        "Send `grant_type=urn:authsvc:params:oauth:grant-type:mfa` with that `mfa_token` and "
        "`code` (the app's 6 digits, or a recovery code `xxxx-xxxx-xxxx-xxxx`) for the usual "
        "token response (with `device_token`); the access token's `amr` is `[pwd, otp, mfa]`, "
        "or `[pwd, mfa]` after a recovery code. An mfa_token works once, for "
        "`AUTHSVC_MFA_TOKEN_LIFETIME_SECONDS`, for at most 5 codes, and only for the client it "
        "was issued to: otherwise `invalid_grant` `MFA_TOKEN_INVALID`. A malformed code is "
        "`invalid_request` `MFA_CODE_INVALID` (nothing counted); a wrong or reused one "
        "`invalid_grant` `MFA_CODE_REJECTED`; from the fifth consecutive wrong code of the "
        "account on, 429 `MFA_THROTTLED` with Retry-After (1 s, 2 s, 4 s ...)."
    ),
    responses={
        400: {"model": OAuthErrorBody},
        429: {
            "description": "Too many attempts (see `Retry-After`): `RATE_LIMITED` in the "
            "ErrorBody shape, or `LOGIN_THROTTLED` / `LOGIN_LOCKED` in the OAuthErrorBody shape."
        },
    },
)
async def token(
    request: Request,
    services: ServicesDep,
    db: SessionDep,
    user_manager: UserManagerDep,
    ip: ClientIP,
    # Declared for the OpenAPI form schema and FastAPI's type checks only: the grants read
    # the parsed form itself, so a new grant's parameters need no change here.
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    refresh_token: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form()] = None,
    client_secret: Annotated[str | None, Form()] = None,
    scope: Annotated[str, Form()] = "",
    device_token: Annotated[str | None, Form()] = None,
    mfa_token: Annotated[str | None, Form()] = None,
    code: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    form = await request.form()  # parsed once already (FastAPI's), cached on the request
    asked = token_request(
        {name: value for name, value in form.items() if isinstance(value, str)},
        authorization=request.headers.get("authorization"),
        client_ip=ip,
        user_agent=request.headers.get("user-agent"),
    )
    context = GrantContext(
        db=db,
        users=user_manager,
        issuer=TokenIssuer(db, services.codec, services.settings.mfa_required_roles),
        limiter=services.limiter,
        rules=services.rules,
        metrics=services.metrics,
        session_policy=services.session_policy,
        throttle=ThrottleRules.from_settings(services.settings),
        devices=DeviceTokenCodec(
            services.token_secret, services.settings.device_token_lifetime_seconds
        ),
        require_verified_email=services.settings.require_verified_email,
        mfa=services.mfa,
        client_id=services.settings.client_id,
    )
    issued = await services.grants.exchange(asked, context)
    body = TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        device_token=issued.device_token,
    )
    return JSONResponse(body.model_dump(exclude_none=True), headers=_NO_STORE)


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
