"""What a user's access token says about them: effective roles, permissions and ``ver``.

Step-up (``AUTHSVC_MFA_REQUIRED_ROLES``): a role named there is in force only in a session
signed in with a second factor. Without one, the token leaves out that role, every role
reached only through it (its parents, transitively) and the permissions only those grant,
and lists them under ``mfa_withheld`` instead. Decided here, at issuance, because every
decision reads the token: the guards (``permissions``), the Cedar principal and the decision
API (``roles``, ``permissions``) then agree without a lookup, and a refresh, which re-issues
with the session's ``amr``, keeps it so. A role that inherits from a gated role keeps its own
permissions: only what comes through the gate waits for the second factor.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import token_permissions
from authsvc.db.models import User
from authsvc.db.repositories import roles as repo


@dataclass(frozen=True)
class Grants:
    """What a user's token should say: roles, permissions, and the version they hold for;
    and what a second factor would add (empty when nothing is withheld)."""

    roles: list[str]
    permissions: list[str]
    version: int
    withheld_roles: list[str] = field(default_factory=list)
    withheld_permissions: list[str] = field(default_factory=list)

    def withheld_claim(self) -> dict[str, list[str]] | None:
        """The token's ``mfa_withheld`` claim, or None (left out) when nothing is withheld."""
        if not self.withheld_roles:
            return None
        return {"roles": self.withheld_roles, "permissions": self.withheld_permissions}


async def grants_for(
    session: AsyncSession, user: User, *, mfa: bool = True, mfa_roles: Collection[str] = ()
) -> Grants:
    """One query (``roles.effective_grants``), not the whole role graph: this runs on every
    sign-in and refresh. Superuser flag and version as of that query, like the roles.

    ``mfa``: the session signed in with a second factor; without one, the roles named in
    ``mfa_roles`` are not in force (module docstring). The defaults (no gate) describe what
    the user holds, as for a user who is the resource of a decision."""
    gated = () if mfa else mfa_roles
    found = await repo.effective_grants(session, user.id, gated)
    if found is None:  # deleted since it was loaded: no roles, only the loaded flags
        return Grants([], token_permissions(user.is_superuser, ()), user.authz_version)
    roles, permissions = found.open_roles, found.open_permissions
    withheld_permissions = found.permissions - permissions
    return Grants(
        sorted(roles),
        token_permissions(found.is_superuser, permissions),
        found.authz_version,
        sorted(found.roles - roles),
        # A superuser holds everything anyway: nothing of theirs waits for a second factor.
        [] if found.is_superuser else sorted(withheld_permissions),
    )
