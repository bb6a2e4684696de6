"""``POST /auth/confirm-email``: the link sent to a new address moves the account to it."""

from __future__ import annotations

from fastapi import APIRouter

from authsvc.api.deps import UserManagerDep
from authsvc.api.errors import error_responses
from authsvc.schemas.users import ConfirmEmailRequest, UserRead

router = APIRouter(tags=["auth"])


@router.post(
    "/confirm-email",
    response_model=UserRead,
    summary="Confirm a new email address (token sent to it)",
    description=(
        "`PATCH /users/me` with a new `email` only records it as pending and sends it a "
        "token. Posting the token here moves the account to that address (verified, since "
        "the token reached it), ends the account's other sessions (the one that asked for the "
        "change stays), and sends the old address a notice with a token for "
        "`POST /auth/revert-email`. 400 `CONFIRM_EMAIL_BAD_TOKEN` for an invalid, expired or "
        "used token, or one of a request a newer change request replaced; 409 "
        "`CONFIRM_EMAIL_ADDRESS_TAKEN` when another account took the address meanwhile. "
        "Recorded in the audit trail."
    ),
    responses=error_responses(400, 409),
)
async def confirm_email(body: ConfirmEmailRequest, user_manager: UserManagerDep) -> UserRead:
    return UserRead.model_validate(await user_manager.confirm_email(body.token))
