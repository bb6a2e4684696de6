"""Policy decisions for routes: what a decision is about (``Target``), asking the loaded
Cedar policy set (``evaluate``) and refusing (``enforce``). No FastAPI: the guards in
``api.guards`` wire these into dependencies."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

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
from authsvc.db.models import Role, User
from authsvc.db.repositories import roles as roles_repo
from authsvc.errors import Forbidden, NotFound
from authsvc.services.claims import grants_for
from authsvc.services.container import AppServices
from authsvc.services.policies import AUDIT_LOG_ID, principal_entities, stored_user_entities
from authsvc.services.stepup import mfa_required


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
    decision = _decide(services, principal, action, target, ip, extra_context)
    services.metrics.policy_latency.labels(source).observe(time.perf_counter() - started)
    services.metrics.policy_decisions.labels(decision.word, source).inc()
    return decision


def _decide(
    services: AppServices,
    principal: Principal,
    action: str,
    target: Target,
    ip: str | None,
    extra_context: dict[str, Any] | None,
) -> Decision:
    context = request_context(ip, services.settings.trusted_networks, mfa=principal.mfa)
    context.update(extra_context or {})
    request = CedarRequest(uid("User", str(principal.user_id)), action, target.uid, context)
    caller = principal_entities(principal)
    entities = merge_entities(caller, target.entities)
    bundle = services.policies.bundle
    try:
        return decide(bundle, request, entities)
    except RequestInvalid as exc:
        # Cedar's text quotes the entities (emails, attributes): say what is wrong instead.
        problem = explain(str(exc), bundle, caller, target.entities, resource_stored=True)
        return Decision(False, [], [problem])


def authorize_request(
    services: AppServices,
    principal: Principal,
    action: str,
    target: Target,
    ip: str | None,
    *,
    extra_context: dict[str, Any] | None = None,
) -> Decision:
    """:func:`evaluate`, then refuse a deny: 403 ``MFA_REQUIRED`` when the same request with
    a second factor (the roles it would put in force, ``context.mfa`` true) is allowed, else
    ``POLICY_DENIED`` (:func:`enforce`). The second evaluation happens only on a deny without
    MFA, and does no I/O: the allowed path costs nothing more."""
    decision = evaluate(services, principal, action, target, ip, extra_context=extra_context)
    if decision.allowed:
        return decision
    if not principal.mfa and not decision.errors:
        stepped = _decide(services, principal.with_mfa(), action, target, ip, extra_context)
        if stepped.allowed:
            raise _needs_mfa(decision, action)
    enforce(decision, action)
    return decision  # not reached: enforce raised


def _needs_mfa(decision: Decision, action: str) -> Forbidden:
    if decision.reasons:  # a forbid that a second factor lifts
        why = f"Denied by policy {', '.join(repr(r) for r in decision.reasons)}."
    else:  # only a role that needs a second factor permits it
        why = f"Only a role that needs a second factor permits {action!r} here."
    return mfa_required(why, action=action, policies=decision.reasons)


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


async def user_target(db: AsyncSession, user: User) -> Target:
    granted = await grants_for(db, user)
    entities = stored_user_entities(user, granted.roles, granted.permissions)
    return Target(uid("User", str(user.id)), entities, user)


async def load_user_target(db: AsyncSession, user_id: uuid.UUID) -> Target:
    """A user with their roles, permissions and attributes; a blank one when missing."""
    user = await db.get(User, user_id)
    if user is None:
        blank = user_entities(
            user_id=user_id, email="", is_active=False, is_superuser=False, is_verified=False,
            roles=(), permissions=(), attributes={},
        )  # fmt: skip
        missing = NotFound("No such user.", code="USER_NOT_FOUND")
        return Target(uid("User", str(user_id)), blank, missing=missing)
    return await user_target(db, user)


async def role_target(db: AsyncSession, name: str, role: Role | None = None) -> Target:
    """A role with the roles it inherits from (``resource in Role::"admin"``)."""
    graph = await roles_repo.load_graph(db)
    return Target(uid("Role", name), role_entities(graph, [name]), role)


async def load_role_target(db: AsyncSession, ref: str) -> Target:
    """A role by id or name (Cedar knows roles by name); a blank one when missing."""
    found = await roles_repo.get_role(db, ref)
    if found is None:
        missing = NotFound(f"No role {ref!r}.", code="ROLE_NOT_FOUND")
        return Target(uid("Role", ref), [entity("Role", ref)], missing=missing)
    return await role_target(db, found.name, found)


def audit_target() -> Target:
    return Target(uid("AuditLog", AUDIT_LOG_ID), [entity("AuditLog", AUDIT_LOG_ID)])
