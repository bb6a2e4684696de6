"""``/users/me/mfa``: a signed-in user's own second factor (TOTP) and recovery codes."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import CurrentUser, RecentAuth
from authsvc.schemas.mfa import (
    CodeBody,
    MfaStatusRead,
    RecoveryCodesRead,
    RemoveTotpBody,
    TotpEnrolmentRead,
)
from authsvc.services.mfa import MfaService

router = APIRouter(tags=["mfa"])

# Secrets and recovery codes in an answer: no cache may keep it (RFC 9111 §5.2.2.5).
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_CODE_ERRORS = (
    "400 `MFA_CODE_INVALID` for an empty, over-long (> 64) or malformed code (nothing is "
    "counted); 400 `MFA_CODE_REJECTED` for a wrong, expired or already used one (counted: "
    "from the fifth consecutive failure on, the next code waits 1 s, 2 s, 4 s ..., answered "
    "429 `MFA_THROTTLED` with Retry-After)."
)
# Appended to the description of every route that changes a second factor.
_RECENT = (
    " Needs a recent sign-in: the access token's `auth_time` at most "
    "`AUTHSVC_REAUTH_MAX_AGE_SECONDS` (300) old, else 403 `REAUTH_REQUIRED` (sign in again)."
)


def _service(db: SessionDep, services: ServicesDep, caller: CurrentUser, ip: str) -> MfaService:
    return MfaService(db, services.mfa, caller.principal, ip)


@router.get("/me/mfa", response_model=MfaStatusRead, summary="My second factor")
async def mfa_status(
    caller: CurrentUser, db: SessionDep, services: ServicesDep, ip: ClientIP
) -> MfaStatusRead:
    status = await _service(db, services, caller, ip).status(caller.user.id)
    return MfaStatusRead(
        totp=status.totp,
        confirmed_at=status.confirmed_at,
        recovery_codes_remaining=status.recovery_codes_remaining,
    )


@router.post(
    "/me/mfa/totp",
    response_model=TotpEnrolmentRead,
    status_code=201,
    summary="Start enrolling an authenticator app (TOTP)",
    description="Answers a new secret, its `otpauth://` URI and that URI as an SVG QR code "
    "(`Cache-Control: no-store`). The factor is pending until `POST /users/me/mfa/totp/confirm` "
    "with a first code; a pending factor asks nothing at sign-in, and starting again replaces "
    "it. 409 `MFA_ALREADY_ENROLLED` when one is enabled (remove it first). Audited "
    "(`auth.mfa.enroll`, never the secret)." + _RECENT,
    responses=error_responses(403, 409),
)
async def start_totp(
    caller: CurrentUser, _recent: RecentAuth, db: SessionDep, services: ServicesDep, ip: ClientIP
) -> JSONResponse:
    enrolment = await _service(db, services, caller, ip).start(caller.user)
    body = TotpEnrolmentRead(
        secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri, qr_svg=enrolment.qr_svg
    )
    return JSONResponse(body.model_dump(), status_code=201, headers=_NO_STORE)


@router.post(
    "/me/mfa/totp/confirm",
    response_model=RecoveryCodesRead,
    summary="Confirm the authenticator app with a first code",
    description="Enables the factor: from now on a password sign-in asks for a code "
    "(`mfa_required` at `POST /auth/token`). Answers ten recovery codes, shown this once "
    "(`Cache-Control: no-store`). 409 `MFA_NOT_PENDING` when no enrolment waits (none "
    f"started, or confirmed already). {_CODE_ERRORS} Audited (`auth.mfa.enable`)." + _RECENT,
    responses=error_responses(400, 403, 409, 429),
)
async def confirm_totp(
    body: CodeBody,
    caller: CurrentUser,
    _recent: RecentAuth,
    db: SessionDep,
    services: ServicesDep,
    ip: ClientIP,
) -> JSONResponse:
    codes = await _service(db, services, caller, ip).confirm(caller.user, body.code)
    return JSONResponse(RecoveryCodesRead(recovery_codes=codes).model_dump(), headers=_NO_STORE)


@router.delete(
    "/me/mfa/totp",
    status_code=204,
    summary="Remove my authenticator app (and its recovery codes)",
    description="Needs `code` (a current one from the app), or, the app lost, `password` and "
    "`recovery_code`. A pending enrolment is removed without either. 404 `MFA_NOT_ENROLLED` "
    f"when there is none. {_CODE_ERRORS} A wrong password counts like a wrong code. Audited "
    "(`auth.mfa.remove`)." + _RECENT,
    responses=error_responses(400, 403, 404, 409, 429),
)
async def remove_totp(
    body: RemoveTotpBody,
    caller: CurrentUser,
    _recent: RecentAuth,
    db: SessionDep,
    services: ServicesDep,
    ip: ClientIP,
) -> Response:
    password_ok = False
    if body.code is None and body.password is not None:
        password_ok = await services.hasher.verify(body.password, caller.user.hashed_password)
    await _service(db, services, caller, ip).remove(
        caller.user, code=body.code, recovery_code=body.recovery_code, password_ok=password_ok
    )
    return Response(status_code=204)


@router.post(
    "/me/mfa/recovery-codes",
    response_model=RecoveryCodesRead,
    summary="New recovery codes",
    description="Needs a current `code` from the app. Answers ten new recovery codes "
    "(`Cache-Control: no-store`); every earlier one stops working. 409 `MFA_NOT_ENABLED` "
    f"without an enabled factor. {_CODE_ERRORS} Audited (`auth.mfa.recovery_codes`)." + _RECENT,
    responses=error_responses(400, 403, 409, 429),
)
async def regenerate_codes(
    body: CodeBody,
    caller: CurrentUser,
    _recent: RecentAuth,
    db: SessionDep,
    services: ServicesDep,
    ip: ClientIP,
) -> JSONResponse:
    codes = await _service(db, services, caller, ip).regenerate(caller.user, body.code)
    return JSONResponse(RecoveryCodesRead(recovery_codes=codes).model_dump(), headers=_NO_STORE)
