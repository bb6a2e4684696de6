"""Roles, permissions and assignments: the rules, the audit trail and token freshness.

Every mutation runs in one transaction with its audit event and commits once, so a refused
change (cycle, last admin, duplicate) leaves nothing behind. Changes that can alter someone's
effective permissions bump ``user.authz_version`` for everyone affected; their older tokens
then stop passing our guards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal, RoleGraph
from authsvc.authz.permissions import (
    ADMIN_ROLE,
    BUILTIN_PERMISSIONS,
    USER_ROLE,
    is_valid_permission,
)
from authsvc.authz.power import Power
from authsvc.db.models import Permission, Role, User
from authsvc.db.repositories import roles as repo
from authsvc.errors import Conflict, InvalidInput, NotFound
from authsvc.services.audit import AuditService
from authsvc.services.guardrails import Guardrails

PROTECTED_ROLES = frozenset({ADMIN_ROLE, USER_ROLE})

# Inheriting from a role confers it, so the policies decide ``roles:assign`` on every new
# parent. The caller's check gets the role graph and the parent's name and raises to refuse
# (the policy engine is the API layer's; this module only says when to ask).
ParentCheck = Callable[[RoleGraph, str], None]


async def sync_builtin(db: AsyncSession, default_role: str | None) -> None:
    """Declare this service's permissions and give all of them to ``admin`` (idempotent).

    Several workers may start at once: one that loses the race to insert a row starts over
    and finds the winner's rows.
    """
    for _attempt in range(5):
        try:
            await _sync_once(db, default_role)
            return
        except IntegrityError:
            await db.rollback()
    raise RuntimeError("could not declare the built-in permissions (concurrent start-ups?)")


async def _sync_once(db: AsyncSession, default_role: str | None) -> None:
    existing = {p.name: p for p in await db.scalars(select(Permission))}
    admin = await repo.get_role(db, ADMIN_ROLE)
    for name, description in BUILTIN_PERMISSIONS.items():
        permission = existing.get(name)
        if permission is None:
            permission = Permission(name=name, description=description, builtin=True)
            db.add(permission)
            await db.flush()
        else:
            permission.builtin, permission.description = True, description
        if admin is not None:
            await repo.grant(db, admin.id, permission.id)
    if default_role and await repo.get_role(db, default_role) is None:
        raise RuntimeError(f"AUTHSVC_DEFAULT_ROLE names a role that does not exist: {default_role}")
    await db.commit()


def _role_snapshot(role: Role, permissions: list[str], parents: list[str]) -> dict[str, Any]:
    return {
        "name": role.name,
        "description": role.description,
        "permissions": permissions,
        "parents": parents,
    }


class RoleService(Guardrails):
    def __init__(
        self,
        db: AsyncSession,
        actor: Principal,
        client_ip: str | None,
        named_roles: frozenset[str] | None = None,
    ) -> None:
        super().__init__(db, actor, named_roles)
        self.client_ip = client_ip
        self.audit = AuditService(db, actor, client_ip)

    # --- lookups ---------------------------------------------------------------------------

    async def role(self, ref: str) -> Role:
        role = await repo.get_role(self.db, ref)
        if role is None:
            raise NotFound(f"No role {ref!r}.", code="ROLE_NOT_FOUND")
        return role

    async def permission(self, name: str) -> Permission:
        if not is_valid_permission(name):
            raise InvalidInput(
                f"{name!r} is not a permission name like 'resource:action'.",
                code="PERMISSION_NAME_INVALID",
            )
        permission = await repo.get_permission(self.db, name)
        if permission is None:
            resource = name.partition(":")[0]
            if name.endswith(":*") and await self._resource_known(resource):
                # A wildcard over a known resource exists implicitly; make it concrete.
                permission = Permission(name=name, description=f"Every {resource} permission.")
                self.db.add(permission)
                await self.db.flush()
                return permission
            raise NotFound(f"No permission {name!r}.", code="PERMISSION_NOT_FOUND")
        return permission

    async def _resource_known(self, resource: str) -> bool:
        query = select(Permission.id).where(Permission.name.startswith(f"{resource}:"))
        return (await self.db.scalars(query.limit(1))).first() is not None

    async def user(self, user_id: uuid.UUID) -> User:
        user = await self.db.get(User, user_id)
        if user is None:
            raise NotFound("No such user.", code="USER_NOT_FOUND")
        return user

    async def describe_role(self, role: Role) -> dict[str, Any]:
        permissions = await repo.role_permission_names(self.db, role.id)
        parents = await repo.role_parent_names(self.db, role.id)
        return {**_role_snapshot(role, permissions, parents), "id": role.id,
                "created_at": role.created_at}  # fmt: skip

    async def effective_permissions(self, user: User) -> dict[str, set[str]]:
        graph = await repo.load_graph(self.db)
        return graph.effective(await repo.user_role_names(self.db, user.id))

    async def user_permissions(self, user_id: uuid.UUID) -> tuple[User, dict[str, set[str]]]:
        """The user and their effective permissions, each with the roles granting it."""
        user = await self.user(user_id)
        return user, await self.effective_permissions(user)

    async def user_roles(self, user_id: uuid.UUID) -> list[str]:
        """The roles assigned to the user directly, by name; 404 ``USER_NOT_FOUND``."""
        user = await self.user(user_id)
        return await repo.user_role_names(self.db, user.id)

    async def get_role(self, ref: str) -> dict[str, Any]:
        return await self.describe_role(await self.role(ref))

    async def list_roles(self, *, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """A page of roles by name, each described, and how many roles there are."""
        roles, total = await repo.page(self.db, repo.roles_query(), limit=limit, offset=offset)
        permissions, parents = await repo.names_by_role(self.db, [role.id for role in roles])
        described = [
            {**_role_snapshot(role, permissions[role.id], parents[role.id]), "id": role.id,
             "created_at": role.created_at}
            for role in roles
        ]  # fmt: skip
        return described, total

    async def members(self, ref: str, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
        """A page of the users the role is assigned to directly, by email."""
        role = await self.role(ref)
        query = repo.members_query(role.id)
        return await repo.page(self.db, query, limit=limit, offset=offset)

    async def list_permissions(
        self, resource: str | None, *, limit: int, offset: int
    ) -> tuple[Sequence[Permission], int]:
        """A page of permissions by name, only ``resource``'s when given."""
        query = repo.permissions_query(resource)
        return await repo.page(self.db, query, limit=limit, offset=offset)

    async def _may_inherit(self, parents: Iterable[str], check: ParentCheck | None) -> None:
        """Ask ``check`` about each new parent that exists (unknown names get the 404 later)."""
        if check is None:
            return
        names = sorted(set(parents))
        graph = await repo.load_graph(self.db) if names else None
        for name in names:
            if graph is not None and await repo.get_role(self.db, name) is not None:
                check(graph, name)

    # --- roles -----------------------------------------------------------------------------

    async def create_role(
        self,
        name: str,
        description: str,
        parents: list[str],
        permissions: list[str],
        *,
        may_inherit: ParentCheck | None = None,
    ) -> dict[str, Any]:
        """The new role, described; its parents first pass ``may_inherit``."""
        await self._may_inherit(parents, may_inherit)
        if await repo.get_role(self.db, name) is not None:
            raise Conflict(f"A role named {name!r} exists.", code="ROLE_EXISTS")
        parent_roles = await self._roles(parents)
        granted = [await self.permission(p) for p in dict.fromkeys(permissions)]
        graph = await repo.load_graph(self.db)
        own = Power(frozenset(p.name for p in granted))
        await self.no_escalation(own | self._role_power(graph, parents), "create this role")
        role = Role(name=name, description=description)
        self.db.add(role)
        await self._flush_unique(f"A role named {name!r} exists.", "ROLE_EXISTS")
        await repo.set_parents(self.db, role.id, parent_roles)
        for permission in granted:
            await repo.grant(self.db, role.id, permission.id)
        after = _role_snapshot(role, sorted(p.name for p in granted), sorted(parents))
        await self._commit("role.create", "role", role.name, None, after)
        return await self.describe_role(role)

    async def update_role(
        self,
        ref: str,
        *,
        name: str | None,
        description: str | None,
        parents: list[str] | None,
        may_inherit: ParentCheck | None = None,
    ) -> dict[str, Any]:
        """The role renamed, described or re-parented, described; new parents first pass
        ``may_inherit``."""
        role = await self.role(ref)
        if parents is not None:
            current = await repo.role_parent_names(self.db, role.id)
            await self._may_inherit(set(parents) - set(current), may_inherit)
        await repo.lock_authz(self.db)
        before = await self.describe_role(role)
        admins_before = await self._admins()
        if name is not None and name != role.name:
            if role.name in PROTECTED_ROLES:
                raise Conflict(f"The {role.name!r} role cannot be renamed.", code="ROLE_PROTECTED")
            # Holders lose everything the role conferred under its old name and gain what
            # it confers under the new one (a name the policies use is a power).
            graph = await repo.load_graph(self.db)
            held = self._role_power(graph, [role.name])
            renamed = Power(held.permissions, self._named({name}) | (held.roles - {role.name}))
            await self.no_escalation(held | renamed, "rename this role")
            role.name = name
            await self._flush_unique(f"A role named {name!r} exists.", "ROLE_EXISTS")
            await self._make_holders_stale(role)  # their tokens name the old role
        if description is not None:
            role.description = description
        if parents is not None:
            graph = await repo.load_graph(self.db)
            if role.name in parents or graph.would_cycle(role.name, parents):
                raise Conflict(
                    f"Making {parents} parents of {role.name!r} would create a cycle.",
                    code="ROLE_CYCLE",
                )
            current = await repo.role_parent_names(self.db, role.id)
            change = self._role_power(graph, current) ^ self._role_power(graph, parents)
            await self.no_escalation(change, "change the parents of this role")
            await repo.set_parents(self.db, role.id, await self._roles(parents))
            await repo.bump_versions(self.db, role_names=graph.descendants(role.name))
        await self._keep_an_admin(admins_before)
        after = await self.describe_role(role)
        await self._commit("role.update", "role", role.name, _plain(before), _plain(after))
        return after

    async def delete_role(self, role: Role, *, force: bool) -> None:
        if role.name in PROTECTED_ROLES:
            raise Conflict(f"The {role.name!r} role cannot be deleted.", code="ROLE_PROTECTED")
        await repo.lock_authz(self.db)
        holders = await repo.count_role_users(self.db, role.id)
        if holders and not force:
            raise Conflict(
                f"{holders} user(s) hold the role {role.name!r}; add ?force=true to delete it.",
                code="ROLE_IN_USE",
                data={"users": holders},
            )
        graph = await repo.load_graph(self.db)
        await self.no_escalation(self._role_power(graph, [role.name]), "delete this role")
        admins_before = await self._admins()
        before = _plain(await self.describe_role(role))
        await self._make_holders_stale(role)
        await self.db.delete(role)
        await self.db.flush()
        await self._keep_an_admin(admins_before)
        await self._commit("role.delete", "role", role.name, before, None)

    async def grant(self, ref: str, name: str) -> None:
        role = await self.role(ref)
        permission = await self.permission(name)
        await self.no_escalation(Power(frozenset({permission.name})), "grant this permission")
        if await repo.grant(self.db, role.id, permission.id):
            await self._make_holders_stale(role)
            after = {"permission": permission.name}
            await self._commit("role.grant", "role", role.name, None, after)

    async def revoke(self, ref: str, name: str) -> None:
        role = await self.role(ref)
        permission = await self.permission(name)
        if role.name == ADMIN_ROLE and permission.builtin:
            raise Conflict(
                "The admin role always holds authsvc's own permissions.", code="ROLE_PROTECTED"
            )
        await self.no_escalation(Power(frozenset({permission.name})), "revoke this permission")
        if await repo.revoke(self.db, role.id, permission.id):
            await self._make_holders_stale(role)
            before = {"permission": permission.name}
            await self._commit("role.revoke", "role", role.name, before, None)

    # --- permissions -----------------------------------------------------------------------

    async def create_permission(self, name: str, description: str) -> Permission:
        if await repo.get_permission(self.db, name) is not None:
            raise Conflict(f"The permission {name!r} exists.", code="PERMISSION_EXISTS")
        permission = Permission(name=name, description=description)
        self.db.add(permission)
        await self._flush_unique(f"The permission {name!r} exists.", "PERMISSION_EXISTS")
        after = {"name": name, "description": description}
        await self._commit("permission.create", "permission", name, None, after)
        return permission

    # --- assignments -----------------------------------------------------------------------

    async def assign(self, user_id: uuid.UUID, role: Role) -> None:
        user = await self.user(user_id)
        graph = await repo.load_graph(self.db)
        await self.no_escalation(self._role_power(graph, [role.name]), "assign this role")
        if await repo.assign(self.db, user.id, role.id):
            await repo.bump_versions(self.db, user_ids=[user.id])
            await self._commit("user.role.assign", "user", str(user.id), None, {"role": role.name})

    async def unassign(self, user_id: uuid.UUID, ref: str) -> None:
        user, role = await self.user(user_id), await self.role(ref)
        await repo.lock_authz(self.db)
        graph = await repo.load_graph(self.db)
        await self.no_escalation(self._role_power(graph, [role.name]), "take this role away")
        admins_before = await self._admins()
        if await repo.unassign(self.db, user.id, role.id):
            await repo.bump_versions(self.db, user_ids=[user.id])
            await self._keep_an_admin(admins_before)
            before = {"role": role.name}
            await self._commit("user.role.unassign", "user", str(user.id), before, None)

    async def _make_holders_stale(self, role: Role) -> None:
        """Everyone holding ``role``, directly or through a role inheriting from it."""
        graph = await repo.load_graph(self.db)
        await repo.bump_versions(self.db, role_names=graph.descendants(role.name))

    async def _roles(self, names: list[str]) -> list[Role]:
        found = await repo.get_roles_by_name(self.db, names)
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise NotFound(f"No role {unknown[0]!r}.", code="ROLE_NOT_FOUND")
        return [found[name] for name in dict.fromkeys(names)]

    async def _flush_unique(self, message: str, code: str) -> None:
        try:
            await self.db.flush()
        except IntegrityError:
            await self.db.rollback()
            raise Conflict(message, code=code) from None

    async def record(
        self,
        action: str,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        self.audit.record(action, target_type, target_id, before, after)

    async def _commit(
        self,
        action: str,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        await self.record(action, target_type, target_id, before, after)
        await self.db.commit()


def _plain(snapshot: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe audit payload: the role's own fields, without ids and timestamps."""
    return {k: v for k, v in snapshot.items() if k not in ("id", "created_at")}
