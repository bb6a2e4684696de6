"""What holding a role or an account confers, and whether a caller holds all of it. Pure.

The one rule of every change to roles, permissions, assignments and accounts: nobody gives,
or takes away, a power they do not hold themselves. A power is

- a permission (``orders:refund`` as much as ``users:write``: another service's permission is
  a power in that service);
- a role that the policies name (``principal in Role::"department_admin"`` gives its holders
  whatever that policy permits, whatever the role's permission list says);
- superuser status.

Attributes that policies read (``department``) are powers too, but what one may do with them
depends on the values: setting them is decided by the policies themselves (action
``users:set-attributes``), not here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from authsvc.authz.engine import Principal, RoleGraph
from authsvc.authz.permissions import BUILTIN_PERMISSIONS, grants


@dataclass(frozen=True)
class Power:
    permissions: frozenset[str] = field(default_factory=frozenset)
    # Roles the policies name, held directly or through a composite role.
    roles: frozenset[str] = field(default_factory=frozenset)
    superuser: bool = False

    def __or__(self, other: Power) -> Power:
        return Power(
            self.permissions | other.permissions,
            self.roles | other.roles,
            self.superuser or other.superuser,
        )

    def __xor__(self, other: Power) -> Power:
        """What one of the two confers and the other does not: a change from one to the
        other gives or takes exactly this."""
        return Power(
            self.permissions ^ other.permissions,
            self.roles ^ other.roles,
            self.superuser != other.superuser,
        )


NOTHING = Power()


def role_power(graph: RoleGraph, roles: Iterable[str], named_roles: frozenset[str]) -> Power:
    """What holding ``roles`` confers: their permissions and the named roles among them and
    every role they inherit from. A role not (yet) in the graph confers nothing."""
    roles = list(roles)
    return Power(
        frozenset(graph.effective(roles)),
        frozenset(graph.effective_roles(roles) & named_roles),
    )


def lacking(
    actor: Principal, power: Power, declared: Collection[str] = frozenset(BUILTIN_PERMISSIONS)
) -> list[str]:
    """The parts of ``power`` that ``actor`` does not hold: permission names, ``role:NAME``,
    ``superuser``. Empty when the actor holds it all (a superuser holds everything).

    A wildcard (``users:*``) is held by holding it, or by holding every permission
    ``declared`` for its resource (an admin holding each ``users:`` permission may give
    ``users:*``); pass every declared permission name, not only authsvc's own.
    """
    if actor.is_superuser:
        return []
    missing = ["superuser"] if power.superuser else []
    missing += sorted(p for p in power.permissions if not _holds(actor, p, declared))
    missing += sorted(f"role:{r}" for r in power.roles if r not in actor.roles)
    return missing


def _holds(actor: Principal, permission: str, declared: Collection[str]) -> bool:
    if actor.has(permission):
        return True
    resource, _, action = permission.partition(":")
    if action != "*":
        return False
    covered = [p for p in declared if p != permission and grants(permission, p)]
    return bool(covered) and all(actor.has(p) for p in covered)
