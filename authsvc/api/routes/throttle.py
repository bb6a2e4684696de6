"""``/users/{user_id}/login-throttle``: an administrator sees and clears the sign-in throttle
of an account (``services.throttle``), e.g. to let its owner in after an attack locked it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.guards import authorize, require_permissions
from authsvc.api.guards import user_resource as user_target
from authsvc.authz.engine import Principal
from authsvc.services import throttle
from authsvc.services.decisions import Authorized

router = APIRouter(tags=["users"])

# An administrator's view: the permission as well as the user-target policy (which alone would
# let people read their own account).
ReadPolicy = Annotated[Authorized, authorize("users:read", user_target)]
WritePolicy = Annotated[Authorized, authorize("users:write", user_target)]


class LoginThrottleRead(BaseModel):
    failures: int = Field(description="Consecutive failed sign-ins from untrusted devices.")
    last_failure_at: datetime | None
    blocked_until: datetime | None = Field(
        description="No password is evaluated for this account before then (untrusted devices)."
    )
    locked: bool = Field(
        description="`AUTHSVC_LOGIN_MAX_CONSECUTIVE_FAILURES` reached: no sign-in from an "
        "untrusted device until a password reset or an unlock."
    )
    notified_at: datetime | None = Field(description="When the owner was told (once an episode).")


@router.get(
    "/{user_id:uuid}/login-throttle",
    response_model=LoginThrottleRead,
    summary="A user's sign-in throttle",
    description="The throttle of the account's current address: zero failures when none. "
    "Needs `users:read` and the policies' `users:read` on the user.",
)
async def read_throttle(
    allowed: ReadPolicy,
    _admin: Annotated[Principal, require_permissions("users:read")],
    db: SessionDep,
    services: ServicesDep,
) -> LoginThrottleRead:
    rules = throttle.ThrottleRules.from_settings(services.settings)
    state = await throttle.view(db, rules, allowed.target.obj)
    return LoginThrottleRead.model_validate(state, from_attributes=True)


@router.delete(
    "/{user_id:uuid}/login-throttle",
    status_code=204,
    summary="Clear a user's sign-in throttle",
    description="Ends the account's throttling episode (failures, delay, lock; the owner is "
    "told again next time). Needs `users:write` and the policies' `users:write` on the user. "
    "Recorded in the audit trail (`auth.login.unlock`, with the state it had).",
)
async def clear_throttle(
    allowed: WritePolicy,
    _admin: Annotated[Principal, require_permissions("users:write")],
    db: SessionDep,
    services: ServicesDep,
    ip: ClientIP,
) -> Response:
    rules = throttle.ThrottleRules.from_settings(services.settings)
    await throttle.unlock(db, rules, allowed.principal, ip, allowed.target.obj)
    return Response(status_code=204)
