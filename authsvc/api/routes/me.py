"""``GET`` and ``PATCH /users/me``: the signed-in user, resolved like on every other route.

Our own routes over fastapi-users' ``UserManager`` (which keeps owning registration,
verification and reset): the caller comes from the one resolver, so a revoked, stale or
deactivated account's token is refused here exactly as everywhere else.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi_users import exceptions

from authsvc.api.deps import UserManagerDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import CurrentUser
from authsvc.errors import BadRequest
from authsvc.schemas.users import UserRead, UserUpdate

router = APIRouter(tags=["users"])


@router.get("/me", response_model=UserRead, summary="The current user")
async def read_me(caller: CurrentUser) -> UserRead:
    return UserRead.model_validate(caller.user)


@router.patch(
    "/me",
    response_model=UserRead,
    summary="Update the current user",
    description="Email and password only. A new `password` or `email` needs the right "
    "`current_password` (401 `CURRENT_PASSWORD_INVALID`); `is_active`, `is_superuser` and "
    "`is_verified` cannot be changed on oneself (422 `USER_FIELD_READ_ONLY`). 400 "
    "`UPDATE_USER_INVALID_PASSWORD` (with `reason`) for a password the policy refuses, "
    "`UPDATE_USER_EMAIL_ALREADY_EXISTS` for an address another account uses. A new email is "
    "unverified and gets a verification token, the account's other sessions end, the old "
    "address gets a notice with a token for `POST /auth/revert-email`, and the change is "
    "audited.",
    responses=error_responses(400),
)
async def update_me(
    body: UserUpdate, caller: CurrentUser, user_manager: UserManagerDep, request: Request
) -> UserRead:
    # An email change ends the account's other sessions; this one (request.state.caller) stays.
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
    return UserRead.model_validate(updated)
