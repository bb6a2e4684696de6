"""The Cedar entities authsvc builds: users (with their roles) and roles (with their parents).

Pure: callers load the rows; these functions only shape them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from authsvc.authz.cedar import entity, uid
from authsvc.authz.engine import RoleGraph, cedar_permissions

# The attributes authsvc fills itself; a user's `attributes` cannot set them.
RESERVED_ATTRIBUTES = frozenset(
    {"email", "is_active", "is_superuser", "is_verified", "roles", "permissions"}
)


def user_entities(
    *,
    user_id: uuid.UUID | str,
    email: str,
    is_active: bool,
    is_superuser: bool,
    is_verified: bool,
    roles: Iterable[str],
    permissions: Iterable[str],
    attributes: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """A ``User`` entity, and the ``Role`` entities it belongs to."""
    roles = sorted(set(roles))
    attrs = {k: v for k, v in attributes.items() if k not in RESERVED_ATTRIBUTES}
    attrs.update(
        email=email,
        is_active=is_active,
        is_superuser=is_superuser,
        is_verified=is_verified,
        roles=roles,
        permissions=cedar_permissions(is_superuser, permissions),
    )
    user = entity("User", str(user_id), attrs, [uid("Role", r) for r in roles])
    return [user, *(entity("Role", r) for r in roles)]


def merge_entities(*groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entity per uid: the attributes of the first group that has it (the principal,
    built from the token, over the same user loaded as a resource), the parents of all (a
    role the caller holds is also known with its own parent roles)."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for group in groups:
        for item in group:
            key = (item["uid"]["type"], item["uid"]["id"])
            if key not in seen:
                seen[key] = {**item, "parents": list(item["parents"])}
                continue
            parents = seen[key]["parents"]
            parents.extend(p for p in item["parents"] if p not in parents)
    return list(seen.values())


def role_entities(graph: RoleGraph, names: Iterable[str]) -> list[dict[str, Any]]:
    """The named roles and every role they inherit from, each with its parents."""
    wanted: set[str] = set()
    for name in names:
        wanted |= graph.ancestors(name) or {name}
    return [
        entity(
            "Role",
            name,
            parents=[uid("Role", p) for p in sorted(graph.nodes[name].parents)]
            if name in graph.nodes
            else [],
        )
        for name in sorted(wanted)
    ]
