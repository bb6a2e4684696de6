"""``GET`` and ``PATCH /users/me``: the signed-in user, resolved like on every other route.

Our own routes over fastapi-users' ``UserManager`` (which keeps owning verification and
reset): the caller comes from the one resolver, so a revoked, stale or
deactivated account's token is refused here exactly as everywhere else.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi_users import exceptions

from authsvc.api.deps import ServicesDep, UserManagerDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import CurrentUser
from authsvc.errors import BadRequest
from authsvc.schemas.users import MeRead, UserUpdate
from authsvc.services.stepup import changes_credentials, require_recent_auth

router = APIRouter(tags=["users"])


@router.get("/me", response_model=MeRead, summary="The current user")
async def read_me(caller: CurrentUser) -> MeRead:
    return MeRead.model_validate(caller.user)


@router.patch(
    "/me",
    response_model=MeRead,
    summary="Update the current user",
    description="Email and password only. A new `password` or `email` needs the right "
    "`current_password` (401 `CURRENT_PASSWORD_INVALID`); `is_active`, `is_superuser` and "
    "`is_verified` cannot be changed on oneself (422 `USER_FIELD_READ_ONLY`). 400 "
    "`UPDATE_USER_INVALID_PASSWORD` (with `reason`) for a password the policy refuses, "
    "`UPDATE_USER_EMAIL_ALREADY_EXISTS` for an address another account uses. A new password "
    "ends every session.\n\n"
    "A new `email` does **not** change `email` yet: answers 200 with the user, `email` "
    "unchanged and the new address as `pending_email`, and sends that address a token. "
    "`POST /auth/confirm-email` with it makes the move (then the account's other sessions end "
    "and the old address gets a notice with a token for `POST /auth/revert-email`). A newer "
    "request replaces a pending one (its token dies); sending your current `email` withdraws "
    "it. Requests and changes are audited.\n\n"
    "Changing the password or the email needs a recent sign-in: the token's `auth_time` at "
    "most `AUTHSVC_REAUTH_MAX_AGE_SECONDS` (300) old, else 403 `REAUTH_REQUIRED` (sign in "
    "again; a refreshed token keeps its session's `auth_time`).",
    responses=error_responses(400),
)
async def update_me(
    body: UserUpdate,
    caller: CurrentUser,
    user_manager: UserManagerDep,
    services: ServicesDep,
    request: Request,
) -> MeRead:
    if changes_credentials(body.password, body.email, caller.user.email):
        # Before the current password is even hashed: a stolen long-lived session cannot
        # take the account over, whatever it knows.
        require_recent_auth(caller.principal, services.settings.reauth_max_age_seconds, time.time())
    # A confirmed email change ends the account's other sessions; the one that asked
    # (request.state.caller) stays.
    try:
        updated = await user_manager.update(body, caller.user, safe=True, request=request)
    except exceptions.InvalidPasswordException as exc:
        raise BadRequest(
            str(exc.reason), code="UPDATE_USER_INVALID_PASSWORD", data={"reason": str(exc.reason)}
        ) from None
    except exceptions.UserAlreadyExists:
        raise BadRequest(
            "Another account uses this email.", code="UPDATE_USER_EMAIL_ALREADY_EXISTS"
        ) from None
    return MeRead.model_validate(updated)
