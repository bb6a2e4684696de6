"""The admin user routes, guarded by permissions: list (with what fastapi-users lacks:
pagination, search, filters, total), read, update, delete. ``/users/me`` stays fastapi-users'.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep, UserManagerDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import authorize, policy_doc, require_permissions, user_resource
from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.errors import InvalidInput
from authsvc.schemas.users import AdminUserUpdate, UserPage, UserRead
from authsvc.services.admin import UserAdminService, UserFilter
from authsvc.services.container import AppServices
from authsvc.services.decisions import Authorized, enforce, evaluate
from authsvc.services.policies import validate_attributes
from authsvc.services.stepup import changes_credentials, require_recent_auth

router = APIRouter(tags=["users"])

UsersRead = Annotated[Principal, require_permissions("users:read")]


@router.get(
    "",
    response_model=UserPage,
    summary="List users",
    description="Oldest first (by `created_at`, then `id`). Page with `cursor`: pass the "
    "`next_cursor` of a page to get the next one (`null` on the last page); every page costs "
    "the same however deep it is. `offset` still works for old clients but is slow on large "
    "tables (the database walks every skipped row) and cannot be combined with `cursor`. "
    "`total` is counted only with `include_total=true` (a full count of the matching users "
    "on every call). 422 `USER_CURSOR_INVALID` for a cursor this route did not hand out, "
    "`USER_CURSOR_WITH_OFFSET` for a cursor with a non-zero offset.",
)
async def list_all(
    db: SessionDep,
    principal: UsersRead,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,  # the one thing the document can say about an opaque value
            description="`next_cursor` of the previous page; opaque. Not with `offset`.",
        ),
    ] = None,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=10_000_000,
            description="For compatibility: slow when deep, use `cursor` instead.",
        ),
    ] = 0,
    email_prefix: Annotated[
        str | None,
        # No NUL: PostgreSQL text cannot hold one (it would be a 500, not an empty page).
        Query(min_length=1, max_length=320, pattern="^[^\x00]*$", description="Case-insensitive."),
    ] = None,
    is_active: bool | None = None,
    is_verified: bool | None = None,
    include_total: Annotated[
        bool, Query(description="Also count the matching users (slow on large tables).")
    ] = False,
) -> UserPage:
    filters = UserFilter(email_prefix=email_prefix, is_active=is_active, is_verified=is_verified)
    page = await UserAdminService(db, principal, None).users(
        filters, limit=limit, offset=offset, cursor=cursor, count=include_total
    )
    return UserPage(
        items=[UserRead.model_validate(user) for user in page.users],
        total=page.total,
        limit=limit,
        offset=offset,
        next_cursor=page.next_cursor.encode() if page.next_cursor else None,
    )


def _may_set_attributes(
    services: AppServices, allowed: Authorized, attributes: dict[str, Any] | None, ip: str
) -> None:
    """Attributes are powers (policies read them): 422 for a malformed set, then the policies
    decide ``users:set-attributes`` on the target, naming the attributes that change."""
    if attributes is None:
        raise InvalidInput(
            "attributes must be an object; send {} to remove them all.",
            code="USER_ATTRIBUTES_INVALID",
        )
    validate_attributes(services.policies.bundle, attributes)
    current = allowed.target.obj.attributes or {}
    changed = sorted(
        name
        for name in set(current) | set(attributes)
        if current.get(name, _ABSENT) != attributes.get(name, _ABSENT)
    )
    if not changed:
        return
    action = "users:set-attributes"
    decision = evaluate(
        services,
        allowed.principal,
        action,
        allowed.target,
        ip,
        extra_context={"attributes": changed},
    )
    enforce(decision, action)


_ABSENT = object()

UserReadPolicy = Annotated[Authorized, authorize("users:read", user_resource)]
UserWritePolicy = Annotated[Authorized, authorize("users:write", user_resource)]
UserDeletePolicy = Annotated[Authorized, authorize("users:delete", user_resource)]
_POLICY = (
    " Decided by the policies in `policies/` (action `{action}`): by default `{action}` "
    "holders, the user themself (read and update), and department admins for users of "
    "their own department."
)


@router.get(
    "/{user_id:uuid}",
    response_model=UserRead,
    summary="Get a user",
    description="403 `POLICY_DENIED` (with the deciding policy ids) when the policies refuse."
    + _POLICY.format(action="users:read"),
    openapi_extra=policy_doc("users:read"),
)
async def get_user(allowed: UserReadPolicy) -> UserRead:
    return UserRead.model_validate(allowed.target.obj)


@router.patch(
    "/{user_id:uuid}",
    response_model=UserRead,
    summary="Update a user",
    description="May set email, password, `is_active`, `is_superuser`, `is_verified`, "
    "`attributes`. 403 `POLICY_DENIED` when the policies refuse the update, or refuse "
    "`users:set-attributes` for a change of `attributes` (by default only superusers, and "
    "`users:write` holders on other accounts); `PERMISSION_DENIED` (with `missing`) for an "
    "account holding a power the caller lacks (a permission, any service's; a role the "
    "policies name; superuser status), for `is_superuser` unless the caller is a superuser; "
    "422 `USER_FIELD_READ_ONLY` for your own flags and `USER_ATTRIBUTES_INVALID` for "
    "`attributes: null` or attributes the policy schema does not declare; 409 `LAST_ADMIN` "
    "when no active administrator would remain; 403 `REAUTH_REQUIRED` for a new password or "
    "email on your own account without a recent sign-in (as on `PATCH /users/me`). Recorded "
    "in the audit trail." + _POLICY.format(action="users:write"),
    openapi_extra=policy_doc("users:write"),
    responses=error_responses(400, 409),
)
async def update_user(
    body: AdminUserUpdate,
    request: Request,
    db: SessionDep,
    services: ServicesDep,
    user_manager: UserManagerDep,
    allowed: UserWritePolicy,
    ip: ClientIP,
) -> UserRead:
    target: User = allowed.target.obj
    if target.id == allowed.principal.user_id and changes_credentials(
        body.password, body.email, target.email
    ):
        # One's own password or email, whatever the route: as PATCH /users/me.
        require_recent_auth(
            allowed.principal, services.settings.reauth_max_age_seconds, time.time()
        )
    if "attributes" in body.model_fields_set:
        _may_set_attributes(services, allowed, body.attributes, ip)
    service = UserAdminService(
        db,
        allowed.principal,
        ip,
        named_roles=services.policies.bundle.named_roles,
        manager=user_manager,
    )
    return UserRead.model_validate(await service.update(allowed.target.obj, body, request))


@router.delete(
    "/{user_id:uuid}",
    status_code=204,
    summary="Delete a user",
    description="403 `POLICY_DENIED` when the policies refuse (by default: without "
    "`users:delete`, or from outside `AUTHSVC_TRUSTED_NETWORKS`), `MFA_REQUIRED` when a "
    "second factor would let it through (by default: always without one); "
    "`PERMISSION_DENIED` for an account holding permissions the caller lacks; 409 "
    "`LAST_ADMIN` for the last active administrator. Recorded in the audit trail.",
    openapi_extra=policy_doc("users:delete"),
    responses=error_responses(409),
)
async def delete_user(
    request: Request,
    db: SessionDep,
    services: ServicesDep,
    user_manager: UserManagerDep,
    allowed: UserDeletePolicy,
    ip: ClientIP,
) -> Response:
    service = UserAdminService(
        db,
        allowed.principal,
        ip,
        named_roles=services.policies.bundle.named_roles,
        manager=user_manager,
    )
    await service.delete(allowed.target.obj, request)
    return Response(status_code=204)
