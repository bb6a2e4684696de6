"""Roles, permissions, user-role assignments: the admin API, guarded by permissions."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.errors import error_responses
from authsvc.api.guards import authorize, policy_doc, require_permissions, role_resource
from authsvc.authz.cedar import uid
from authsvc.authz.engine import Principal, RoleGraph
from authsvc.authz.entities import role_entities
from authsvc.authz.permissions import PERMISSION_NAME
from authsvc.schemas.authz import (
    EffectivePermission,
    PermissionCreate,
    PermissionPage,
    PermissionRead,
    RoleCreate,
    RoleMember,
    RoleMemberPage,
    RolePage,
    RoleRead,
    RoleUpdate,
    UserPermissions,
    UserRoles,
)
from authsvc.services.container import AppServices
from authsvc.services.decisions import Authorized, Target, enforce, evaluate
from authsvc.services.roles import ParentCheck, RoleService

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
RolesRead = Annotated[Principal, require_permissions("roles:read")]
RolesWrite = Annotated[Principal, require_permissions("roles:write")]
PermsRead = Annotated[Principal, require_permissions("permissions:read")]
PermsWrite = Annotated[Principal, require_permissions("permissions:write")]
ROLE_REF = "A role's id or name."
# The no-escalation rule (authz/power.py), as every mutating route's description says it.
_POWER = (
    " 403 `PERMISSION_DENIED` (with `missing`) unless the caller holds every power at stake: "
    "the permissions (any service's) and the roles the policies name that {what}."
)
# The document states the name rule; the route checks it itself, answering a name outside it
# with 422 `PERMISSION_NAME_INVALID` (as it does for names in bodies).
PermissionInPath = Annotated[
    str,
    Path(
        description="`resource:action` (or `resource:*`).",
        json_schema_extra={"pattern": PERMISSION_NAME.pattern, "maxLength": 128},
    ),
]
RoleDeletePolicy = Annotated[Authorized, authorize("roles:delete", role_resource)]
RoleAssignPolicy = Annotated[Authorized, authorize("roles:assign", role_resource)]


def _may_inherit(services: AppServices, principal: Principal, ip: str) -> ParentCheck:
    """Inheriting from a role confers it: the policies decide ``roles:assign`` on each new
    parent, as on a role assigned to a user."""

    def check(graph: RoleGraph, name: str) -> None:
        target = Target(uid("Role", name), role_entities(graph, [name]))
        enforce(evaluate(services, principal, "roles:assign", target, ip), "roles:assign")

    return check


def _service(
    db: SessionDep, principal: Principal, ip: str, services: AppServices | None = None
) -> RoleService:
    """Mutations pass ``services``: the loaded policies say which roles are powers."""
    named = services.policies.bundle.named_roles if services is not None else None
    return RoleService(db, principal, ip, named)


@router.get("/roles", tags=["roles"], response_model=RolePage, summary="List roles")
async def list_roles(
    db: SessionDep, principal: RolesRead, ip: ClientIP, limit: Limit = 50, offset: Offset = 0
) -> RolePage:
    roles, total = await _service(db, principal, ip).list_roles(limit=limit, offset=offset)
    items = [RoleRead.model_validate(role) for role in roles]
    return RolePage(items=items, total=total, limit=limit, offset=offset)


@router.post(
    "/roles",
    tags=["roles"],
    status_code=201,
    response_model=RoleRead,
    summary="Create a role",
    description="409 `ROLE_EXISTS` for a taken name; 404 for an unknown parent or permission; "
    "403 `POLICY_DENIED` when the policies refuse `roles:assign` on a parent (by default: "
    "`admin` or a role inheriting it, unless a superuser asks)."
    + _POWER.format(what="the new role would confer"),
    responses=error_responses(404, 409),
)
async def create_role(
    body: RoleCreate,
    db: SessionDep,
    services: ServicesDep,
    principal: RolesWrite,
    ip: ClientIP,
) -> RoleRead:
    role = await _service(db, principal, ip, services).create_role(
        body.name,
        body.description,
        body.parents,
        body.permissions,
        may_inherit=_may_inherit(services, principal, ip),
    )
    return RoleRead.model_validate(role)


@router.get("/roles/{role}", tags=["roles"], response_model=RoleRead, summary="Get a role")
async def get_role(role: str, db: SessionDep, principal: RolesRead, ip: ClientIP) -> RoleRead:
    return RoleRead.model_validate(await _service(db, principal, ip).get_role(role))


@router.patch(
    "/roles/{role}",
    tags=["roles"],
    response_model=RoleRead,
    summary="Rename, describe or re-parent a role",
    description="409 `ROLE_CYCLE` when the parents would form a cycle; `ROLE_PROTECTED` to "
    "rename `admin` or `user`; `LAST_ADMIN` when no active administrator would remain. 403 "
    "`POLICY_DENIED` when the policies refuse `roles:assign` on a new parent."
    + _POWER.format(
        what="a rename changes (under the old and the new name) or a new set of parents adds "
        "or removes"
    ),
    responses=error_responses(409),
)
async def update_role(
    role: str,
    body: RoleUpdate,
    db: SessionDep,
    services: ServicesDep,
    principal: RolesWrite,
    ip: ClientIP,
) -> RoleRead:
    updated = await _service(db, principal, ip, services).update_role(
        role,
        name=body.name,
        description=body.description,
        parents=body.parents,
        may_inherit=_may_inherit(services, principal, ip),
    )
    return RoleRead.model_validate(updated)


@router.delete(
    "/roles/{role}",
    tags=["roles"],
    status_code=204,
    summary="Delete a role",
    description="409 `ROLE_IN_USE` while users hold it, unless `force=true`; "
    "`ROLE_PROTECTED` for `admin` and `user`. 403 `POLICY_DENIED` when the policies refuse "
    "(action `roles:delete`; by default: without `roles:write`, or from outside "
    "`AUTHSVC_TRUSTED_NETWORKS`), `MFA_REQUIRED` when a second factor would let it through "
    "(by default: always without one)." + _POWER.format(what="the role confers"),
    openapi_extra=policy_doc("roles:delete"),
    responses=error_responses(409),
)
async def delete_role(
    db: SessionDep,
    services: ServicesDep,
    allowed: RoleDeletePolicy,
    ip: ClientIP,
    force: bool = False,
) -> Response:
    service = _service(db, allowed.principal, ip, services)
    await service.delete_role(allowed.target.obj, force=force)
    return Response(status_code=204)


@router.put(
    "/roles/{role}/permissions/{permission}",
    tags=["roles"],
    status_code=204,
    summary="Grant a permission to a role",
    description="Idempotent. `resource:*` grants every action of a known resource. 403 "
    "`PERMISSION_DENIED` (with `missing`) unless the caller holds the permission (any "
    "service's; `resource:*`: it, or every declared permission of the resource).",
)
async def grant(
    role: str,
    permission: PermissionInPath,
    db: SessionDep,
    services: ServicesDep,
    principal: RolesWrite,
    ip: ClientIP,
) -> Response:
    await _service(db, principal, ip, services).grant(role, permission)
    return Response(status_code=204)


@router.delete(
    "/roles/{role}/permissions/{permission}",
    tags=["roles"],
    status_code=204,
    summary="Take a permission from a role",
    description="Idempotent. 403 `PERMISSION_DENIED` (with `missing`) unless the caller holds "
    "the permission: taking a power away needs what giving it needs.",
)
async def revoke(
    role: str,
    permission: PermissionInPath,
    db: SessionDep,
    services: ServicesDep,
    principal: RolesWrite,
    ip: ClientIP,
) -> Response:
    await _service(db, principal, ip, services).revoke(role, permission)
    return Response(status_code=204)


@router.get(
    "/roles/{role}/users",
    tags=["roles"],
    response_model=RoleMemberPage,
    summary="Users assigned a role (directly)",
)
async def role_users(
    role: str,
    db: SessionDep,
    principal: RolesRead,
    ip: ClientIP,
    limit: Limit = 50,
    offset: Offset = 0,
) -> RoleMemberPage:
    service = _service(db, principal, ip)
    users, total = await service.members(role, limit=limit, offset=offset)
    items = [RoleMember.model_validate(user) for user in users]
    return RoleMemberPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/permissions", tags=["permissions"], response_model=PermissionPage, summary="List permissions"
)
async def list_permissions(
    db: SessionDep,
    principal: PermsRead,
    ip: ClientIP,
    limit: Limit = 50,
    offset: Offset = 0,
    resource: Annotated[str | None, Query(max_length=64, description="Only this resource.")] = None,
) -> PermissionPage:
    service = _service(db, principal, ip)
    items, total = await service.list_permissions(resource, limit=limit, offset=offset)
    return PermissionPage(
        items=[PermissionRead.model_validate(p) for p in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post(
    "/permissions",
    tags=["permissions"],
    status_code=201,
    response_model=PermissionRead,
    summary="Declare a permission (e.g. for another service)",
    description="422 for a name that is not `resource:action`; 409 `PERMISSION_EXISTS`.",
    responses=error_responses(409),
)
async def create_permission(
    body: PermissionCreate, db: SessionDep, principal: PermsWrite, ip: ClientIP
) -> PermissionRead:
    permission = await _service(db, principal, ip).create_permission(body.name, body.description)
    return PermissionRead.model_validate(permission)


@router.get(
    "/users/{user_id:uuid}/roles",
    tags=["roles"],
    response_model=UserRoles,
    summary="A user's roles",
)
async def user_roles_list(
    user_id: uuid.UUID, db: SessionDep, principal: RolesRead, ip: ClientIP
) -> UserRoles:
    return UserRoles(user_id=user_id, roles=await _service(db, principal, ip).user_roles(user_id))


@router.put(
    "/users/{user_id:uuid}/roles/{role}",
    tags=["roles"],
    status_code=204,
    summary="Assign a role to a user",
    description="Idempotent. The user's older tokens stop passing authsvc's guards. 403 "
    "`POLICY_DENIED` when the policies refuse (action `roles:assign` on the role; by default: "
    "without `roles:write`, or `admin` (or a role inheriting it) unless a superuser asks)."
    + _POWER.format(what="the role confers"),
    openapi_extra=policy_doc("roles:assign"),
)
async def assign_role(
    user_id: uuid.UUID,
    db: SessionDep,
    services: ServicesDep,
    allowed: RoleAssignPolicy,
    ip: ClientIP,
) -> Response:
    await _service(db, allowed.principal, ip, services).assign(user_id, allowed.target.obj)
    return Response(status_code=204)


@router.delete(
    "/users/{user_id:uuid}/roles/{role}",
    tags=["roles"],
    status_code=204,
    summary="Take a role from a user",
    description="Idempotent. 409 `LAST_ADMIN` when no active administrator would remain."
    + _POWER.format(what="the role confers (taking away needs what giving needs)"),
    responses=error_responses(409),
)
async def unassign_role(
    user_id: uuid.UUID,
    role: str,
    db: SessionDep,
    services: ServicesDep,
    principal: RolesWrite,
    ip: ClientIP,
) -> Response:
    await _service(db, principal, ip, services).unassign(user_id, role)
    return Response(status_code=204)


@router.get(
    "/users/{user_id:uuid}/permissions",
    tags=["permissions"],
    response_model=UserPermissions,
    summary="A user's effective permissions, with the roles that grant each",
)
async def user_permissions(
    user_id: uuid.UUID, db: SessionDep, principal: PermsRead, ip: ClientIP
) -> UserPermissions:
    user, granted = await _service(db, principal, ip).user_permissions(user_id)
    return UserPermissions(
        user_id=user.id,
        is_superuser=user.is_superuser,
        permissions=[
            EffectivePermission(name=name, granted_by=sorted(roles))
            for name, roles in sorted(granted.items())
        ],
    )
