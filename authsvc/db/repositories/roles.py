"""Queries on roles, permissions and assignments. No commits, no HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Select, delete, func, insert, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from authsvc.authz.engine import RoleGraph, RoleNode
from authsvc.db.models import Permission, Role, User, role_parents, role_permissions, user_roles

_users = User.__table__.c


async def load_graph(session: AsyncSession) -> RoleGraph:
    """Every role with its own permissions and parents: three queries, for the whole graph."""
    names = dict((await session.execute(select(Role.id, Role.name))).tuples().all())
    perms: dict[uuid.UUID, set[str]] = {role_id: set() for role_id in names}
    parents: dict[uuid.UUID, set[str]] = {role_id: set() for role_id in names}
    granted = select(role_permissions.c.role_id, Permission.name).join(
        Permission, Permission.id == role_permissions.c.permission_id
    )
    for role_id, permission in (await session.execute(granted)).tuples():
        perms[role_id].add(permission)
    for role_id, parent_id in (await session.execute(select(role_parents))).tuples():
        parents[role_id].add(names[parent_id])
    return RoleGraph(
        {
            name: RoleNode(name, frozenset(perms[role_id]), frozenset(parents[role_id]))
            for role_id, name in names.items()
        }
    )


@dataclass(frozen=True)
class EffectiveGrants:
    """A user's roles (held and inherited), the permissions they grant, and the account's
    ``authz_version`` and superuser flag as of the same read. ``open_roles`` and
    ``open_permissions``: the part reached without passing through a gated role (see
    :func:`effective_grants`); everything when no role is gated."""

    roles: frozenset[str]
    permissions: frozenset[str]
    authz_version: int
    is_superuser: bool
    open_roles: frozenset[str] = frozenset()
    open_permissions: frozenset[str] = frozenset()


async def effective_grants(
    session: AsyncSession, user_id: uuid.UUID, gated: Collection[str] = ()
) -> EffectiveGrants | None:
    """One statement, whatever the depth of the hierarchy: a recursive CTE walks from the
    user's roles up through their parents. UNION (not UNION ALL) drops rows already found,
    so the walk ends even on a parent cycle, which writes refuse but the data could hold.
    The version comes from the same statement, hence the same snapshot as the roles: a
    token never claims a version newer than the roles it lists. None: no such user.

    Each row of the walk also says whether it was reached through a role named in ``gated``
    (the role itself, or any role on the way to it): a role reached both ways is open. The
    flag at most doubles the rows (UNION still ends the walk), and costs no statement."""
    names = sorted(gated)
    parent = aliased(Role)
    held_role = aliased(Role)
    held = (
        select(
            user_roles.c.role_id.label("role_id"),
            held_role.name.in_(names).label("gated"),
        )
        .join(held_role, held_role.id == user_roles.c.role_id)
        .where(user_roles.c.user_id == user_id)
        .cte("held_roles", recursive=True)
    )
    held = held.union(
        select(role_parents.c.parent_id, or_(held.c.gated, parent.name.in_(names)))
        .join(held, role_parents.c.role_id == held.c.role_id)
        .join(parent, parent.id == role_parents.c.parent_id)
    )
    query = (
        select(
            _users.authz_version,
            _users.is_superuser,
            Role.name.label("role"),
            Permission.name.label("permission"),
            held.c.gated,
        )
        .select_from(User)
        # The user's row even without roles: their version still counts.
        .outerjoin(held, true())
        .outerjoin(Role, Role.id == held.c.role_id)
        .outerjoin(role_permissions, role_permissions.c.role_id == Role.id)
        .outerjoin(Permission, Permission.id == role_permissions.c.permission_id)
        .where(_users.id == user_id)
    )
    rows = (await session.execute(query)).all()
    if not rows:
        return None
    open_rows = [row for row in rows if not row.gated]
    return EffectiveGrants(
        roles=frozenset(row.role for row in rows if row.role is not None),
        permissions=frozenset(row.permission for row in rows if row.permission is not None),
        authz_version=rows[0].authz_version,
        is_superuser=rows[0].is_superuser,
        open_roles=frozenset(row.role for row in open_rows if row.role is not None),
        open_permissions=frozenset(
            row.permission for row in open_rows if row.permission is not None
        ),
    )


async def get_role(session: AsyncSession, ref: str) -> Role | None:
    """By id or by name."""
    try:
        role_id = uuid.UUID(ref)
    except ValueError:
        return (await session.scalars(select(Role).where(Role.name == ref))).one_or_none()
    return await session.get(Role, role_id)


async def get_roles_by_name(session: AsyncSession, names: Iterable[str]) -> dict[str, Role]:
    wanted = set(names)
    if not wanted:
        return {}
    found = await session.scalars(select(Role).where(Role.name.in_(wanted)))
    return {role.name: role for role in found}


async def get_permission(session: AsyncSession, name: str) -> Permission | None:
    query = select(Permission).where(Permission.name == name)
    return (await session.scalars(query)).one_or_none()


T = TypeVar("T")


async def page(
    session: AsyncSession, query: Select[tuple[T]], *, limit: int, offset: int
) -> tuple[Sequence[T], int]:
    """One page of ``query`` and the number of rows it has in all."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = (await session.scalars(query.limit(limit).offset(offset))).all()
    return items, int(total or 0)


def roles_query() -> Select[tuple[Role]]:
    return select(Role).order_by(Role.name)


def members_query(role_id: uuid.UUID) -> Select[tuple[User]]:
    """The users holding the role directly, by email."""
    return (
        select(User)
        .join(user_roles, user_roles.c.user_id == _users.id)
        .where(user_roles.c.role_id == role_id)
        .order_by(_users.email)
    )


def permissions_query(resource: str | None) -> Select[tuple[Permission]]:
    """Every permission by name, or only ``resource``'s (``resource:...``)."""
    query = select(Permission).order_by(Permission.name)
    if resource:
        query = query.where(Permission.name.startswith(f"{resource}:", autoescape=True))
    return query


async def role_permission_names(session: AsyncSession, role_id: uuid.UUID) -> list[str]:
    query = (
        select(Permission.name)
        .join(role_permissions, role_permissions.c.permission_id == Permission.id)
        .where(role_permissions.c.role_id == role_id)
        .order_by(Permission.name)
    )
    return list((await session.scalars(query)).all())


async def role_parent_names(session: AsyncSession, role_id: uuid.UUID) -> list[str]:
    query = (
        select(Role.name)
        .join(role_parents, role_parents.c.parent_id == Role.id)
        .where(role_parents.c.role_id == role_id)
        .order_by(Role.name)
    )
    return list((await session.scalars(query)).all())


async def names_by_role(
    session: AsyncSession, role_ids: Sequence[uuid.UUID]
) -> tuple[dict[uuid.UUID, list[str]], dict[uuid.UUID, list[str]]]:
    """The permission names and the parent names of each of ``role_ids``, sorted, in two
    queries whatever the number of roles (a page of roles costs no query per role)."""
    permissions: dict[uuid.UUID, list[str]] = {role_id: [] for role_id in role_ids}
    parents: dict[uuid.UUID, list[str]] = {role_id: [] for role_id in role_ids}
    if not role_ids:
        return permissions, parents
    granted = (
        select(role_permissions.c.role_id, Permission.name)
        .join(Permission, role_permissions.c.permission_id == Permission.id)
        .where(role_permissions.c.role_id.in_(role_ids))
        .order_by(Permission.name)
    )
    for role_id, name in (await session.execute(granted)).all():
        permissions[role_id].append(name)
    inherited = (
        select(role_parents.c.role_id, Role.name)
        .join(Role, role_parents.c.parent_id == Role.id)
        .where(role_parents.c.role_id.in_(role_ids))
        .order_by(Role.name)
    )
    for role_id, name in (await session.execute(inherited)).all():
        parents[role_id].append(name)
    return permissions, parents


async def set_parents(session: AsyncSession, role_id: uuid.UUID, parents: Iterable[Role]) -> None:
    await session.execute(delete(role_parents).where(role_parents.c.role_id == role_id))
    rows = [{"role_id": role_id, "parent_id": parent.id} for parent in parents]
    if rows:
        await session.execute(insert(role_parents), rows)


async def grant(session: AsyncSession, role_id: uuid.UUID, permission_id: uuid.UUID) -> bool:
    exists = await session.scalar(
        select(func.count())
        .select_from(role_permissions)
        .where(role_permissions.c.role_id == role_id)
        .where(role_permissions.c.permission_id == permission_id)
    )
    if exists:
        return False
    await session.execute(
        insert(role_permissions).values(role_id=role_id, permission_id=permission_id)
    )
    return True


async def revoke(session: AsyncSession, role_id: uuid.UUID, permission_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(role_permissions)
        .where(role_permissions.c.role_id == role_id)
        .where(role_permissions.c.permission_id == permission_id)
    )
    return bool(getattr(result, "rowcount", 0))


async def user_role_names(session: AsyncSession, user_id: uuid.UUID) -> list[str]:
    query = (
        select(Role.name)
        .join(user_roles, user_roles.c.role_id == Role.id)
        .where(user_roles.c.user_id == user_id)
        .order_by(Role.name)
    )
    return list((await session.scalars(query)).all())


async def assign(session: AsyncSession, user_id: uuid.UUID, role_id: uuid.UUID) -> bool:
    exists = await session.scalar(
        select(func.count())
        .select_from(user_roles)
        .where(user_roles.c.user_id == user_id)
        .where(user_roles.c.role_id == role_id)
    )
    if exists:
        return False
    await session.execute(insert(user_roles).values(user_id=user_id, role_id=role_id))
    return True


async def unassign(session: AsyncSession, user_id: uuid.UUID, role_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(user_roles)
        .where(user_roles.c.user_id == user_id)
        .where(user_roles.c.role_id == role_id)
    )
    return bool(getattr(result, "rowcount", 0))


async def count_role_users(session: AsyncSession, role_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(user_roles).where(user_roles.c.role_id == role_id)
    return int(await session.scalar(query) or 0)


async def bump_versions(
    session: AsyncSession, *, user_ids: Iterable[uuid.UUID] = (), role_names: Iterable[str] = ()
) -> None:
    """Make tokens issued before now stale for these users and everyone holding these roles."""
    users = list(user_ids)
    names = list(role_names)
    conditions = []
    if users:
        conditions.append(_users.id.in_(users))
    if names:
        holders = (
            select(user_roles.c.user_id)
            .join(Role, Role.id == user_roles.c.role_id)
            .where(Role.name.in_(names))
        )
        conditions.append(_users.id.in_(holders))
    for condition in conditions:
        await session.execute(
            update(User).where(condition).values(authz_version=_users.authz_version + 1)
        )


async def count_admins(session: AsyncSession, admin_roles: Iterable[str]) -> int:
    """Active users who are superusers or hold one of ``admin_roles``."""
    holders = (
        select(user_roles.c.user_id)
        .join(Role, Role.id == user_roles.c.role_id)
        .where(Role.name.in_(list(admin_roles)))
    )
    query = (
        select(func.count())
        .select_from(User)
        .where(_users.is_active.is_(True))
        .where(_users.is_superuser.is_(True) | _users.id.in_(holders))
    )
    return int(await session.scalar(query) or 0)


async def lock_authz(session: AsyncSession) -> None:
    """Serialize changes that could remove the last administrator.

    A no-op write to the ``admin`` role row: PostgreSQL makes a second such transaction wait
    for the first to commit, and its later reads (READ COMMITTED) then see that commit. SQLite
    has one writer at a time anyway. Call it before the change writes anything: it ends the
    transaction the caller's lookups opened, so nothing read before the lock is mistaken for
    current (a test removes the last two admins concurrently and shows the second is refused).
    """
    if session.in_transaction():
        if session.new or session.dirty or session.deleted:
            raise RuntimeError("lock_authz must come before any change in the transaction")
        await session.commit()
    await session.execute(update(Role).where(Role.name == "admin").values(name=Role.name))
