"""What a user's access token says about them: effective roles, permissions and ``ver``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import token_permissions
from authsvc.db.models import User
from authsvc.db.repositories import roles as repo


@dataclass(frozen=True)
class Grants:
    """What a user's token should say: roles, permissions, and the version they hold for."""

    roles: list[str]
    permissions: list[str]
    version: int


async def grants_for(session: AsyncSession, user: User) -> Grants:
    """One query (``roles.effective_grants``), not the whole role graph: this runs on every
    sign-in and refresh. Superuser flag and version as of that query, like the roles."""
    found = await repo.effective_grants(session, user.id)
    if found is None:  # deleted since it was loaded: no roles, only the loaded flags
        return Grants([], token_permissions(user.is_superuser, ()), user.authz_version)
    permissions = token_permissions(found.is_superuser, found.permissions)
    return Grants(sorted(found.roles), permissions, found.authz_version)
