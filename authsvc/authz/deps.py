"""Guards: ``require_permissions`` and ``require_roles``, as FastAPI ``Security`` dependencies.

The permissions a route needs are declared as OAuth2 scopes of the bearer scheme, so OpenAPI
lists them as the route's security requirement. The caller's permissions come from the access
token's claims, trusted only if the token's ``ver`` equals the user's current
``authz_version``: the user row is read on every authenticated request anyway (is the account
still active?), so freshness costs no extra query, and since every worker reads that one row,
there is no per-worker cache to invalidate.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.api.deps import ServicesDep, SessionDep
from authsvc.authz.engine import Principal
from authsvc.authz.permissions import BUILTIN_PERMISSIONS
from authsvc.db.models import User
from authsvc.errors import Forbidden, Unauthorized
from authsvc.security.tokens import InvalidTokenError

TOKEN_URL = "auth/token"
# Same class and URL as fastapi-users' BearerTransport: one security scheme in OpenAPI.
bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False, scopes=BUILTIN_PERMISSIONS)


def _refuse(message: str, code: str) -> Unauthorized:
    return Unauthorized(message, code=code)


async def _load_user(session: AsyncSession, subject: Any) -> User | None:
    try:
        return await session.get(User, uuid.UUID(str(subject)))
    except ValueError:
        return None


async def get_principal(
    security_scopes: SecurityScopes,
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    token: Annotated[str | None, Depends(bearer)],
) -> Principal:
    if not token:
        raise _refuse("Authentication required: send a bearer access token.", "NOT_AUTHENTICATED")
    try:
        claims = services.codec.verify(token)
    except InvalidTokenError:
        raise _refuse("The access token is invalid or expired.", "TOKEN_INVALID") from None
    user = await _load_user(session, claims["sub"])
    if user is None or not user.is_active:
        raise _refuse("The access token is invalid or expired.", "TOKEN_INVALID")
    if claims.get("ver") != user.authz_version:
        raise _refuse(
            "Your roles or permissions changed since this token was issued; get a new token.",
            "TOKEN_STALE",
        )
    principal = Principal(
        user_id=user.id,
        email=user.email,
        is_superuser=user.is_superuser,
        roles=frozenset(_strings(claims.get("roles"))),
        permissions=frozenset(_strings(claims.get("permissions"))),
    )
    request.state.principal = principal
    missing = principal.missing(security_scopes.scopes)
    if missing:
        raise Forbidden(
            f"Permission {missing[0]!r} is required.",
            code="PERMISSION_DENIED",
            data={"missing": missing},
        )
    return principal


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def require_permissions(*permissions: str) -> Any:
    """``Annotated[Principal, require_permissions("roles:write")]`` or in ``dependencies=[...]``.

    Several on one route add up; every permission named must be held.
    """
    unknown = [p for p in permissions if p not in BUILTIN_PERMISSIONS]
    if unknown:
        raise ValueError(f"undeclared permissions {unknown}; add them to BUILTIN_PERMISSIONS")
    return Security(get_principal, scopes=list(permissions))


def require_roles(*roles: str) -> Any:
    """The caller must hold every role named (directly or through a composite role)."""

    async def check(principal: Annotated[Principal, Security(get_principal)]) -> Principal:
        missing = [role for role in roles if role not in principal.roles]
        if missing and not principal.is_superuser:
            raise Forbidden(
                f"Role {missing[0]!r} is required.",
                code="PERMISSION_DENIED",
                data={"missing_roles": missing},
            )
        return principal

    return Depends(check)


CurrentPrincipal = Annotated[Principal, Security(get_principal)]
