"""``POST /auth/register``: self-registration, which mails the verification token itself.

With ``AUTHSVC_REQUIRE_VERIFIED_EMAIL`` on (the default) the answer is one fixed ``202`` for a
new and a taken address alike, after the same expensive work (``UserManager.register_quietly``):
neither the status, the body nor the time tells whether an address has an account. With it off,
fastapi-users' behaviour stays: ``201`` with the user, or ``400 REGISTER_USER_ALREADY_EXISTS``,
which reveals that the address is registered.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from fastapi_users import exceptions

from authsvc.api.deps import ServicesDep, UserManagerDep
from authsvc.api.errors import error_responses
from authsvc.errors import BadRequest
from authsvc.schemas.users import RegistrationAccepted, UserCreate, UserRead

router = APIRouter(tags=["auth"])

_DESCRIPTION = (
    "JSON `{email, password}` and nothing else (unknown or privileged fields: 422). The "
    "password policy's reason comes back as 400 `REGISTER_INVALID_PASSWORD`, checked before "
    "anything else. A new account is unverified and gets a verification token by mail "
    "(`POST /auth/verify`).\n\n"
    "With `AUTHSVC_REQUIRE_VERIFIED_EMAIL` on (the default), the answer is always **202** with "
    "the same body, whether the address was free or already registered, after the same work: "
    "the owner of a taken address is mailed that someone tried to register with it (with a "
    "hint to reset the password), and nothing is written. With it off, **201** with the new "
    "user, or 400 `REGISTER_USER_ALREADY_EXISTS` for a taken address: that answer tells anyone "
    "whether an address is registered. Limited per client IP."
)


@router.post(
    "/register",
    status_code=202,
    response_model=RegistrationAccepted,
    summary="Register a user",
    description=_DESCRIPTION,
    responses={
        201: {"model": UserRead, "description": "Registered (verification not required)."},
        **error_responses(400),
    },
)
async def register(
    body: UserCreate, request: Request, services: ServicesDep, user_manager: UserManagerDep
) -> JSONResponse:
    try:
        if services.settings.require_verified_email:
            await user_manager.register_quietly(body, request)
            return JSONResponse(RegistrationAccepted().model_dump(), status_code=202)
        created = await user_manager.create(body, safe=True, request=request)
    except exceptions.InvalidPasswordException as exc:
        raise BadRequest(
            str(exc.reason), code="REGISTER_INVALID_PASSWORD", data={"reason": str(exc.reason)}
        ) from None
    except exceptions.UserAlreadyExists:
        raise BadRequest(
            "An account with this email exists.", code="REGISTER_USER_ALREADY_EXISTS"
        ) from None
    return JSONResponse(UserRead.model_validate(created).model_dump(mode="json"), status_code=201)
