"""``/users/{user_id}/mfa``: an administrator sees and resets a user's second factor
(``services.mfa_admin``), e.g. for an owner who lost their phone and their recovery codes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.guards import authorize, require_permissions
from authsvc.api.guards import user_resource as user_target
from authsvc.authz.engine import Principal
from authsvc.services import mfa_admin
from authsvc.services.decisions import Authorized

router = APIRouter(tags=["users"])

# An administrator's view: the permission as well as the user-target policy (which alone would
# let people read their own account, or a department admin their department's).
ReadPolicy = Annotated[Authorized, authorize("users:read", user_target)]
WritePolicy = Annotated[Authorized, authorize("users:write", user_target)]


class MfaStatusRead(BaseModel):
    totp: mfa_admin.TotpStatus = Field(
        description="`none`: no TOTP factor; `pending`: enrolment started, not confirmed by a "
        "first code (it never asks for a code at sign-in); `enabled`: sign-ins need a code."
    )
    enabled_at: datetime | None = Field(description="When the factor was confirmed.")
    recovery_codes_remaining: int = Field(description="Recovery codes not used yet.")


@router.get(
    "/{user_id:uuid}/mfa",
    response_model=MfaStatusRead,
    summary="A user's second factor",
    description="Whether the account has a TOTP factor, since when, and how many recovery "
    "codes it has left (never the secret nor the codes). Needs `users:read` and the policies' "
    "`users:read` on the user.",
)
async def read_mfa(
    allowed: ReadPolicy,
    _admin: Annotated[Principal, require_permissions("users:read")],
    db: SessionDep,
) -> MfaStatusRead:
    status = await mfa_admin.view(db, allowed.target.obj)
    return MfaStatusRead.model_validate(status, from_attributes=True)


@router.delete(
    "/{user_id:uuid}/mfa",
    status_code=204,
    summary="Reset a user's second factor",
    description="Removes the TOTP factor (pending or enabled), every recovery code and every "
    "open MFA sign-in challenge, in one transaction; the password alone then signs in, and "
    "the owner can enrol again. The owner is told by mail. The user's sessions are kept "
    "(after a lost phone, one of them is how the owner enrols anew) unless `end_sessions=true` "
    "(the account may be in someone else's hands). Needs `users:write` and the policies' "
    "`users:write` on the user; 403 `PERMISSION_DENIED` (with `missing`) for an account "
    "holding a power the caller lacks; 404 `MFA_NOT_ENROLLED` when the account has no factor "
    "and no recovery codes (nothing recorded, nobody mailed). Recorded in the audit trail "
    "(`auth.mfa.reset`, with the status it had).",
)
async def reset_mfa(
    allowed: WritePolicy,
    _admin: Annotated[Principal, require_permissions("users:write")],
    db: SessionDep,
    services: ServicesDep,
    ip: ClientIP,
    end_sessions: Annotated[
        bool,
        Query(description="Also end every session of the user (a suspected takeover)."),
    ] = False,
) -> Response:
    by = mfa_admin.ResetBy(allowed.principal, ip, services.policies.bundle.named_roles)
    await mfa_admin.reset(db, by, allowed.target.obj, services.notifier, end_sessions=end_sessions)
    return Response(status_code=204)
