"""The guardrails of every change to who may do what (roles, accounts, service clients).

- No escalation (``authz.power``): nobody gives, takes away or takes over a power they do not
  hold themselves; 403 ``PERMISSION_DENIED`` naming what is missing.
- Superuser status: only a superuser grants, takes, changes or deletes it.
- The last administrator: no change may leave no active administrator (409 ``LAST_ADMIN``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal, RoleGraph
from authsvc.authz.permissions import ADMIN_ROLE, BUILTIN_PERMISSIONS
from authsvc.authz.power import NOTHING, Power, lacking, role_power
from authsvc.db.models import Permission, User
from authsvc.db.repositories import roles as repo
from authsvc.errors import Conflict, Forbidden


class Guardrails:
    def __init__(
        self, db: AsyncSession, actor: Principal, named_roles: frozenset[str] | None = None
    ) -> None:
        self.db = db
        self.actor = actor
        # The roles the loaded policies name (PolicyBundle.named_roles). Not given: every
        # role counts as named, the strict reading.
        self.named_roles = named_roles

    async def guard_target(self, user: User) -> None:
        """Only change or delete an account whose powers the actor holds too: otherwise a
        ``users:write`` holder could take over an administrator's account (or the account
        of anyone holding another service's permission, or a role the policies name)."""
        if user.is_superuser and not self.actor.is_superuser:
            raise Forbidden(
                "Only a superuser may change or delete a superuser.",
                code="PERMISSION_DENIED",
                data={"missing": ["superuser"]},
            )
        await self.no_escalation(await self.user_power(user), "change this account")

    async def user_power(self, user: User) -> Power:
        graph = await repo.load_graph(self.db)
        held = self._role_power(graph, await repo.user_role_names(self.db, user.id))
        return held | Power(superuser=user.is_superuser)

    def check_superuser_flag(self, is_superuser: bool | None, user: User) -> bool:
        """Whether the update changes superuser status; only a superuser may do that."""
        if is_superuser is None or is_superuser == user.is_superuser:
            return False
        if not self.actor.is_superuser:
            raise Forbidden(
                "Only a superuser may grant or take superuser status.", code="PERMISSION_DENIED"
            )
        return True

    async def no_escalation(self, power: Power, doing: str) -> None:
        """The one rule (see ``authz.power``): nobody gives, takes away or takes over a power
        they do not hold themselves. 403 ``PERMISSION_DENIED`` naming what is missing."""
        declared: frozenset[str] = frozenset(BUILTIN_PERMISSIONS)
        if any(p.endswith(":*") for p in power.permissions):
            declared |= frozenset(await self.db.scalars(select(Permission.name)))
        missing = lacking(self.actor, power, declared)
        if missing:
            raise Forbidden(
                f"You cannot {doing}: it needs {missing[0]!r}, which you do not hold.",
                code="PERMISSION_DENIED",
                data={"missing": missing},
            )

    def _named(self, roles: Iterable[str]) -> frozenset[str]:
        roles = frozenset(roles)
        return roles if self.named_roles is None else roles & self.named_roles

    def _role_power(self, graph: RoleGraph, roles: Iterable[str]) -> Power:
        roles = list(roles)
        if not roles:
            return NOTHING
        named = self._named(graph.effective_roles(roles))
        return role_power(graph, roles, named)

    async def _admins(self) -> int:
        graph = await repo.load_graph(self.db)
        return await repo.count_admins(self.db, graph.descendants(ADMIN_ROLE))

    async def guard_admin_change(
        self, user: User, is_active: bool | None, is_superuser: bool | None
    ) -> None:
        """Refuse to deactivate, demote or delete the last active administrator."""
        active_after = user.is_active if is_active is None else is_active
        superuser_after = user.is_superuser if is_superuser is None else is_superuser
        if active_after and (superuser_after or not user.is_superuser):
            return  # still as much an administrator as before
        await repo.lock_authz(self.db)
        graph = await repo.load_graph(self.db)
        admin_roles = graph.descendants(ADMIN_ROLE)
        holds_role = bool(admin_roles & set(await repo.user_role_names(self.db, user.id)))
        was_admin = user.is_active and (user.is_superuser or holds_role)
        still_admin = active_after and (superuser_after or holds_role)
        if was_admin and not still_admin:
            if await repo.count_admins(self.db, admin_roles) <= 1:
                raise Conflict("This would leave no active administrator.", code="LAST_ADMIN")

    async def _keep_an_admin(self, before: int) -> None:
        await self.db.flush()
        if before > 0 and await self._admins() == 0:
            raise Conflict("This would leave no active administrator.", code="LAST_ADMIN")
