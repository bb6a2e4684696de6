"""Role-based decisions, pure: no I/O. The role graph is loaded by the caller.

A role's effective permissions are its own plus its parents' (transitively, Keycloak's
composite roles); a user's are the union over their roles; a superuser holds everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from authsvc.authz.permissions import BUILTIN_PERMISSIONS, EVERYTHING, grants


@dataclass(frozen=True)
class RoleNode:
    name: str
    permissions: frozenset[str]
    parents: frozenset[str]


class RoleGraph:
    def __init__(self, nodes: Mapping[str, RoleNode]) -> None:
        self.nodes = dict(nodes)

    def ancestors(self, role: str) -> set[str]:
        """``role`` and every role it inherits from."""
        seen: set[str] = set()
        stack = [role]
        while stack:
            name = stack.pop()
            if name in seen or name not in self.nodes:
                continue
            seen.add(name)
            stack.extend(self.nodes[name].parents)
        return seen

    def descendants(self, role: str) -> set[str]:
        """``role`` and every role that inherits from it (whose holders it affects)."""
        return {name for name in self.nodes if role in self.ancestors(name)}

    def would_cycle(self, role: str, parents: Iterable[str]) -> bool:
        return any(role in self.ancestors(parent) for parent in parents)

    def effective(self, roles: Iterable[str]) -> dict[str, set[str]]:
        """Permission name -> the assigned roles that grant it (directly or inherited)."""
        granted: dict[str, set[str]] = {}
        for assigned in roles:
            for name in self.ancestors(assigned):
                for permission in self.nodes[name].permissions:
                    granted.setdefault(permission, set()).add(assigned)
        return granted

    def effective_roles(self, roles: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for assigned in roles:
            found |= self.ancestors(assigned)
        return found


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do. The anonymous caller has no permissions."""

    user_id: uuid.UUID | None
    email: str | None = None
    is_superuser: bool = False
    roles: frozenset[str] = field(default_factory=frozenset)
    permissions: frozenset[str] = field(default_factory=frozenset)
    session_id: uuid.UUID | None = None
    is_verified: bool = False
    # The user's policy attributes (department, ...), for the Cedar principal entity.
    attributes: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # The token came from a multi-factor login (its "amr" claim says "mfa").
    mfa: bool = False
    # When the user last proved who they are (the token's "auth_time", seconds since the epoch;
    # None for a token without one): recent-authentication checks compare it with now.
    auth_time: int | None = None
    # What a second factor would add (the token's "mfa_withheld"): roles that need MFA
    # (AUTHSVC_MFA_REQUIRED_ROLES) and what only they grant. Empty with MFA.
    withheld_roles: frozenset[str] = field(default_factory=frozenset)
    withheld_permissions: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    def needs_mfa_for(self, permission: str) -> bool:
        """Not held now, but a role held would grant it in a session with a second factor."""
        return not self.has(permission) and any(
            grants(held, permission) for held in self.withheld_permissions
        )

    def with_mfa(self) -> Principal:
        """The same caller as if signed in with a second factor: the withheld roles and
        permissions in force, ``mfa`` true. For asking "would MFA change the answer?"."""
        return replace(
            self,
            roles=self.roles | self.withheld_roles,
            permissions=self.permissions | self.withheld_permissions,
            mfa=True,
            withheld_roles=frozenset(),
            withheld_permissions=frozenset(),
        )

    def has(self, permission: str) -> bool:
        if self.is_superuser:
            return True
        return any(grants(held, permission) for held in self.permissions)

    def missing(self, permissions: Iterable[str]) -> list[str]:
        return [p for p in permissions if not self.has(p)]

    def expanded_permissions(self) -> list[str]:
        return cedar_permissions(self.is_superuser, self.permissions)


ANONYMOUS = Principal(user_id=None)


def token_permissions(is_superuser: bool, granted: Iterable[str]) -> list[str]:
    """The ``permissions`` claim: sorted names, or ``["*"]`` for a superuser."""
    return [EVERYTHING] if is_superuser else sorted(set(granted))


def cedar_permissions(is_superuser: bool, held: Iterable[str]) -> list[str]:
    """The ``permissions`` attribute of a Cedar ``User``: authsvc's own permissions with
    wildcards expanded (a superuser holds all), and other names exactly as granted."""
    held = set(held)
    own = {
        name for name in BUILTIN_PERMISSIONS if is_superuser or any(grants(h, name) for h in held)
    }
    return sorted(own | (held - {EVERYTHING}))
