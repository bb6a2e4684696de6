"""The admin user routes, guarded by permissions: list (with what fastapi-users lacks:
pagination, search, filters, total), read, update, delete. ``/users/me`` stays fastapi-users'.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi_users import exceptions

from authsvc.api.deps import ClientIP, SessionDep, UserManagerDep
from authsvc.authz.deps import require_permissions
from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.db.repositories.users import UserFilter, list_users
from authsvc.errors import BadRequest
from authsvc.schemas.users import AdminUserUpdate, UserPage, UserRead
from authsvc.services.authz import AuthzService

router = APIRouter(tags=["users"])

UsersRead = Annotated[Principal, require_permissions("users:read")]
UsersWrite = Annotated[Principal, require_permissions("users:write")]
UsersDelete = Annotated[Principal, require_permissions("users:delete")]


def _snapshot(user: User) -> dict[str, object]:
    return {
        "email": user.email,
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
        "is_verified": user.is_verified,
    }


@router.get("", response_model=UserPage, summary="List users")
async def list_all(
    session: SessionDep,
    principal: UsersRead,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    email_prefix: Annotated[
        str | None, Query(min_length=1, max_length=320, description="Case-insensitive.")
    ] = None,
    is_active: bool | None = None,
    is_verified: bool | None = None,
) -> UserPage:
    filters = UserFilter(email_prefix=email_prefix, is_active=is_active, is_verified=is_verified)
    users, total = await list_users(session, filters, limit=limit, offset=offset)
    return UserPage(
        items=[UserRead.model_validate(user) for user in users],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{user_id}", response_model=UserRead, summary="Get a user")
async def get_user(
    user_id: uuid.UUID, session: SessionDep, principal: UsersRead, ip: ClientIP
) -> UserRead:
    return UserRead.model_validate(await AuthzService(session, principal, ip).user(user_id))


@router.patch(
    "/{user_id}",
    response_model=UserRead,
    summary="Update a user",
    description="May set email, password, `is_active`, `is_superuser`, `is_verified`. 403 "
    "`PERMISSION_DENIED` for an account holding permissions the caller lacks, or for "
    "`is_superuser` unless the caller is a superuser; 409 `LAST_ADMIN` when no active "
    "administrator would remain. Recorded in the audit trail.",
)
async def update_user(
    user_id: uuid.UUID,
    body: AdminUserUpdate,
    request: Request,
    session: SessionDep,
    user_manager: UserManagerDep,
    principal: UsersWrite,
    ip: ClientIP,
) -> UserRead:
    service = AuthzService(session, principal, ip)
    user = await service.user(user_id)
    before = _snapshot(user)
    await service.guard_target(user)
    superuser_changes = service.check_superuser_flag(body.is_superuser, user)
    await service.guard_admin_change(user, body.is_active, body.is_superuser)
    if superuser_changes:
        # Their tokens say "permissions": ["*"] (or lack it): make them stale either way.
        user.authz_version += 1
    changes = body.model_dump(exclude_unset=True, exclude={"password"})
    after = {**before, **changes, "password_changed": body.password is not None}
    await service.record("user.update", "user", str(user.id), before, after)
    try:
        # Commits the change and the audit event together.
        updated = await user_manager.update(body, user, safe=False, request=request)
    except exceptions.InvalidPasswordException as exc:
        raise BadRequest(
            str(exc.reason), code="UPDATE_USER_INVALID_PASSWORD", data={"reason": str(exc.reason)}
        ) from None
    except exceptions.UserAlreadyExists:
        raise BadRequest(
            "Another account uses this email.", code="UPDATE_USER_EMAIL_ALREADY_EXISTS"
        ) from None
    return UserRead.model_validate(updated)


@router.delete(
    "/{user_id}",
    status_code=204,
    summary="Delete a user",
    description="403 `PERMISSION_DENIED` for an account holding permissions the caller lacks; "
    "409 `LAST_ADMIN` for the last active administrator. Recorded in the audit trail.",
)
async def delete_user(
    user_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    user_manager: UserManagerDep,
    principal: UsersDelete,
    ip: ClientIP,
) -> Response:
    service = AuthzService(session, principal, ip)
    user = await service.user(user_id)
    await service.guard_target(user)
    await service.guard_admin_change(user, is_active=False, is_superuser=None)
    await service.record("user.delete", "user", str(user.id), _snapshot(user), None)
    await user_manager.delete(user, request=request)  # commits the audit event with it
    return Response(status_code=204)
