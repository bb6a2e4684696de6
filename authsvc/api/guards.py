"""Guards: who may call a route, as FastAPI dependencies over the one caller resolver.

``require_permissions`` and ``require_roles`` need a signed-in user holding them; the
permissions are declared as OAuth2 scopes of the bearer scheme, so OpenAPI lists them as the
route's security requirement. ``authorize(action, loader)`` asks the Cedar policies about the
resource the loader names. Every guard reads the caller ``api.deps.get_caller`` resolved once
for the request (``services.callers``): one token verification, one rule set, one error shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from authsvc.api.deps import CallerDep, ClientIP, ServicesDep, SessionDep
from authsvc.authz.engine import Principal
from authsvc.authz.permissions import BUILTIN_PERMISSIONS
from authsvc.errors import Forbidden
from authsvc.services.callers import Anonymous, Caller, ClientCaller, UserCaller
from authsvc.services.decisions import (
    Authorized,
    Target,
    audit_target,
    authorize_request,
    load_role_target,
    load_user_target,
)
from authsvc.services.policies import AUTHSVC_ACTIONS
from authsvc.services.stepup import missing_permissions, missing_roles, require_recent_auth

TOKEN_URL = "auth/token"
# The OpenAPI security scheme (Swagger's Authorize button). Guards depend on it only so the
# document shows it; the token itself is read once, by ``get_caller``.
bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_URL, auto_error=False, scopes=BUILTIN_PERMISSIONS)
BearerDoc = Annotated[str | None, Depends(bearer)]


def user_token_required() -> Forbidden:
    return Forbidden(
        "This route needs a user's access token; service (client_credentials) tokens are "
        "accepted only by POST /authz/check and POST /authz/check/batch.",
        code="USER_TOKEN_REQUIRED",
    )


def _user(caller: Caller) -> UserCaller:
    if isinstance(caller, Anonymous):
        raise caller.reason()
    if isinstance(caller, ClientCaller):
        raise user_token_required()
    return caller


async def get_user_caller(caller: CallerDep, _: BearerDoc) -> UserCaller:
    """A signed-in user, or the 401 (no, bad, revoked, stale token) / 403 (service token)."""
    return _user(caller)


CurrentUser = Annotated[UserCaller, Depends(get_user_caller)]


async def get_any_caller(caller: CallerDep, _: BearerDoc) -> UserCaller | ClientCaller:
    """A signed-in user or a service client (the decision API takes both)."""
    if isinstance(caller, Anonymous):
        raise caller.reason()
    return caller


AnyCaller = Annotated[UserCaller | ClientCaller, Depends(get_any_caller)]


async def get_principal(
    security_scopes: SecurityScopes, caller: CallerDep, _: BearerDoc
) -> Principal:
    # Straight from the cached caller (not through get_user_caller): one dependency level less
    # on every guarded request.
    principal = _user(caller).principal
    missing = principal.missing(security_scopes.scopes)
    if missing:
        raise missing_permissions(principal, missing)  # MFA_REQUIRED when a factor would do
    return principal


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
            raise missing_roles(principal, missing)
        return principal

    return Depends(check)


CurrentPrincipal = Annotated[Principal, Security(get_principal)]


async def get_recent_principal(caller: CallerDep, services: ServicesDep, _: BearerDoc) -> Principal:
    """A signed-in user whose sign-in is recent (``AUTHSVC_REAUTH_MAX_AGE_SECONDS``), else
    403 ``REAUTH_REQUIRED``: for changing how one signs in (the second-factor routes)."""
    principal = _user(caller).principal
    require_recent_auth(principal, services.settings.reauth_max_age_seconds, time.time())
    return principal


# ``principal: RecentAuth`` on a route that changes credentials.
RecentAuth = Annotated[Principal, Depends(get_recent_principal)]


def authorize(action: str, resource: Callable[..., Awaitable[Target]]) -> Any:
    """``Annotated[Authorized, authorize("users:write", user_resource)]``: the caller, the
    loaded resource and the decision of the policies (``policies/``), or 403 ``POLICY_DENIED``
    (``MFA_REQUIRED`` when a second factor would turn the deny into an allow).

    The principal comes from the resolved caller (token claims and the user's attributes), the
    resource from the loader dependency, the context from the request (client IP, trusted
    network, time, MFA).
    """
    if action not in AUTHSVC_ACTIONS:
        raise ValueError(f"undeclared action {action!r}; add it to AUTHSVC_ACTIONS and the schema")

    async def check(
        principal: CurrentPrincipal,
        services: ServicesDep,
        ip: ClientIP,
        target: Target,
    ) -> Authorized:
        decision = authorize_request(services, principal, action, target, ip)
        if target.missing is not None:
            raise target.missing
        return Authorized(principal, target, decision)

    # Set as an object: a string annotation could not name this closure's `resource`.
    check.__annotations__["target"] = Annotated[Target, Depends(resource)]
    return Depends(check)


def policy_doc(action: str) -> dict[str, Any]:
    """``openapi_extra`` for a policy-guarded route: the route table shows the action."""
    return {"x-authsvc-policy-action": action}


# Loaders of the resource a path names. Each runs after the guard has resolved the caller
# (FastAPI solves ``check``'s principal first), so an unauthenticated request reads nothing.
async def user_resource(user_id: uuid.UUID, db: SessionDep) -> Target:
    """The ``{user_id}`` of the path, with its roles, permissions and attributes."""
    return await load_user_target(db, user_id)


async def role_resource(role: str, db: SessionDep) -> Target:
    """The ``{role}`` of the path (an id or a name)."""
    return await load_role_target(db, role)


async def audit_resource() -> Target:
    return audit_target()
