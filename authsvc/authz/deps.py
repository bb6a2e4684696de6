"""Guards: ``require_permissions`` and ``require_roles``, as FastAPI ``Security`` dependencies.

The permissions a route needs are declared as OAuth2 scopes of the bearer scheme, so OpenAPI
lists them as the route's security requirement. The caller's permissions come from the access
token's claims, trusted only if the token's ``ver`` equals the user's current
``authz_version`` and its session (``sid``) has not ended. The user row and the session row are
read together in one query on every authenticated request (is the account still active?), so
freshness and revocation cost no extra query, and since every worker reads the same rows, there
is no per-worker cache to invalidate: a logout is seen by all workers at once.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from authsvc.api.deps import ServicesDep, SessionDep
from authsvc.authz.engine import Principal
from authsvc.authz.permissions import BUILTIN_PERMISSIONS
from authsvc.db.repositories.sessions import is_live, user_with_session
from authsvc.errors import Forbidden, Unauthorized
from authsvc.security.tokens import InvalidTokenError

TOKEN_URL = "auth/token"
# Same class and URL as fastapi-users' BearerTransport: one security scheme in OpenAPI.
bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False, scopes=BUILTIN_PERMISSIONS)


def _refuse(message: str, code: str) -> Unauthorized:
    return Unauthorized(message, code=code)


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
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
    user_id, session_id = _uuid(claims["sub"]), _uuid(claims.get("sid"))
    if user_id is None or session_id is None:
        raise _refuse("The access token is invalid or expired.", "TOKEN_INVALID")
    user, login = await user_with_session(session, user_id, session_id)
    if user is None or not user.is_active:
        raise _refuse("The access token is invalid or expired.", "TOKEN_INVALID")
    if not is_live(login):
        raise _refuse("The session has ended (signed out or revoked).", "TOKEN_REVOKED")
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
        session_id=session_id,
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
