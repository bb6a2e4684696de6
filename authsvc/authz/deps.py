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

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.authz.cedar import (
    CedarRequest,
    Decision,
    RequestInvalid,
    decide,
    entity,
    request_context,
    uid,
)
from authsvc.authz.check_errors import explain
from authsvc.authz.engine import Principal
from authsvc.authz.entities import merge_entities, role_entities, user_entities
from authsvc.authz.permissions import BUILTIN_PERMISSIONS
from authsvc.db.models import Role, User
from authsvc.db.repositories import roles as roles_repo
from authsvc.db.repositories.sessions import is_live, user_with_session
from authsvc.errors import Forbidden, NotFound, Unauthorized
from authsvc.security.tokens import InvalidTokenError
from authsvc.services.container import AppServices
from authsvc.services.policies import (
    AUDIT_LOG_ID,
    AUTHSVC_ACTIONS,
    principal_entities,
    stored_user_entities,
)
from authsvc.services.roles import grants_for

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
    if "sid" not in claims:  # a valid service (client_credentials) token: say why it is refused
        raise Forbidden(
            "This route needs a user's access token; service (client_credentials) tokens are "
            "accepted only by POST /authz/check and POST /authz/check/batch.",
            code="USER_TOKEN_REQUIRED",
        )
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
        is_verified=user.is_verified,
        attributes=user.attributes or {},
        mfa="mfa" in _strings(claims.get("amr")),
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


# --- Cedar policies --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a policy decision is about: its Cedar uid, the entities describing it, and the
    object the route goes on to use (a ``User``, a ``Role``)."""

    uid: dict[str, str]
    entities: list[dict[str, Any]]
    obj: Any = None
    # Set when the resource does not exist: the policies decide on a blank entity of that id,
    # and only a caller they allow learns that it is missing (others get the 403).
    missing: NotFound | None = None


@dataclass(frozen=True)
class Authorized:
    principal: Principal
    target: Target
    decision: Decision


def evaluate(
    services: AppServices,
    principal: Principal,
    action: str,
    target: Target,
    ip: str | None,
    *,
    source: str = "route",
    extra_context: dict[str, Any] | None = None,
) -> Decision:
    """Ask the loaded policy set. Fails closed: a request the schema cannot type denies."""
    started = time.perf_counter()
    context = request_context(ip, services.settings.trusted_networks, mfa=principal.mfa)
    context.update(extra_context or {})
    request = CedarRequest(uid("User", str(principal.user_id)), action, target.uid, context)
    caller = principal_entities(principal)
    entities = merge_entities(caller, target.entities)
    bundle = services.policies.bundle
    try:
        decision = decide(bundle, request, entities)
    except RequestInvalid as exc:
        # Cedar's text quotes the entities (emails, attributes): say what is wrong instead.
        problem = explain(str(exc), bundle, caller, target.entities, resource_stored=True)
        decision = Decision(False, [], [problem])
    services.metrics.policy_latency.labels(source).observe(time.perf_counter() - started)
    services.metrics.policy_decisions.labels(decision.word, source).inc()
    return decision


def enforce(decision: Decision, action: str) -> None:
    """403 ``POLICY_DENIED``, naming the policies that decided (none: nothing permits)."""
    if decision.allowed:
        return
    if decision.reasons:
        message = f"Denied by policy {', '.join(repr(r) for r in decision.reasons)}."
    elif decision.errors:
        message = "Denied: the policies could not be evaluated for this request."
    else:
        message = f"No policy permits {action!r} here."
    data: dict[str, Any] = {"action": action, "policies": decision.reasons}
    if decision.errors:
        data["errors"] = decision.errors
    raise Forbidden(message, code="POLICY_DENIED", data=data)


def authorize(action: str, resource: Callable[..., Awaitable[Target]]) -> Any:
    """``Annotated[Authorized, authorize("users:write", user_resource)]``: the caller, the
    loaded resource and the decision of the policies (``policies/``), or 403 ``POLICY_DENIED``.

    The principal is built from the token and the user's attributes, the resource by the
    loader dependency, the context from the request (client IP, trusted network, time, MFA).
    """
    if action not in AUTHSVC_ACTIONS:
        raise ValueError(f"undeclared action {action!r}; add it to AUTHSVC_ACTIONS and the schema")

    async def check(
        principal: CurrentPrincipal,
        services: ServicesDep,
        ip: ClientIP,
        target: Target,
    ) -> Authorized:
        decision = evaluate(services, principal, action, target, ip)
        enforce(decision, action)
        if target.missing is not None:
            raise target.missing
        return Authorized(principal, target, decision)

    # Set as an object: a string annotation could not name this closure's `resource`.
    check.__annotations__["target"] = Annotated[Target, Depends(resource)]
    return Depends(check)


def policy_doc(action: str) -> dict[str, Any]:
    """``openapi_extra`` for a policy-guarded route: the route table shows the action."""
    return {"x-authsvc-policy-action": action}


async def user_target(session: SessionDep, user: User) -> Target:
    granted = await grants_for(session, user)
    entities = stored_user_entities(user, granted.roles, granted.permissions)
    return Target(uid("User", str(user.id)), entities, user)


async def user_resource(user_id: uuid.UUID, session: SessionDep) -> Target:
    """The ``{user_id}`` of the path, with its roles, permissions and attributes."""
    user = await session.get(User, user_id)
    if user is None:
        blank = user_entities(
            user_id=user_id, email="", is_active=False, is_superuser=False, is_verified=False,
            roles=(), permissions=(), attributes={},
        )  # fmt: skip
        missing = NotFound("No such user.", code="USER_NOT_FOUND")
        return Target(uid("User", str(user_id)), blank, missing=missing)
    return await user_target(session, user)


async def role_target(session: SessionDep, name: str, role: Role | None = None) -> Target:
    """A role with the roles it inherits from (``resource in Role::"admin"``)."""
    graph = await roles_repo.load_graph(session)
    return Target(uid("Role", name), role_entities(graph, [name]), role)


async def role_resource(role: str, session: SessionDep) -> Target:
    """The ``{role}`` of the path (an id or a name); Cedar knows roles by name."""
    found = await roles_repo.get_role(session, role)
    if found is None:
        missing = NotFound(f"No role {role!r}.", code="ROLE_NOT_FOUND")
        return Target(uid("Role", role), [entity("Role", role)], missing=missing)
    return await role_target(session, found.name, found)


async def audit_resource() -> Target:
    return Target(uid("AuditLog", AUDIT_LOG_ID), [entity("AuditLog", AUDIT_LOG_ID)])
