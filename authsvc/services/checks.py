"""The decision API's use case: one check, or a batch against one policy set.

Who asks is the resolved caller (a user, or a service client by its client_credentials
token); authsvc supplies its own entities (users with their roles, permissions and attributes;
roles with the roles they inherit from; the audit log), each loaded at most once per batch.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.cedar import (
    CedarRequest,
    Decision,
    PolicyBundle,
    RequestInvalid,
    decide,
    entity,
    request_context,
    uid,
)
from authsvc.authz.check_errors import explain
from authsvc.authz.engine import Principal, RoleGraph
from authsvc.authz.entities import merge_entities, role_entities
from authsvc.db.models import User
from authsvc.db.repositories import roles as roles_repo
from authsvc.errors import Forbidden, InvalidInput
from authsvc.schemas.policies import (
    BatchCheckRequest,
    BatchCheckResult,
    CheckRequest,
    CheckResult,
    EntityRef,
)
from authsvc.services.callers import ClientCaller, UserCaller
from authsvc.services.claims import grants_for
from authsvc.services.container import AppServices
from authsvc.services.policies import AUDIT_LOG_ID, principal_entities, stored_user_entities
from authsvc.services.stepup import missing_permissions

OWN_TYPES = frozenset({"User", "Role", "AuditLog"})
# Context attributes authsvc computes; a caller cannot set them.
COMPUTED_CONTEXT = frozenset({"trusted_network", "mfa", "now"})


@dataclass(frozen=True)
class Caller:
    """Who asks: a signed-in user (``principal``) or a service client (``client_id``)."""

    principal: Principal | None
    client_id: str | None
    may_check_anyone: bool


def _asker(caller: UserCaller | ClientCaller) -> Caller:
    if isinstance(caller, ClientCaller):
        return Caller(None, caller.client_id, caller.has("authz:check"))
    return Caller(caller.principal, None, caller.principal.has("authz:check"))


def _refuse(message: str, index: int | None = None, **data: Any) -> InvalidInput:
    if index is not None:
        message, data = f"checks[{index}]: {message}", {"index": index, **data}
    return InvalidInput(message, code="AUTHZ_CHECK_INVALID", data=data)


@dataclass
class _Loader:
    """Loads authsvc's own entities for a batch, each at most once."""

    session: AsyncSession
    # AUTHSVC_MFA_REQUIRED_ROLES: not in force for a principal named by someone else.
    mfa_roles: frozenset[str] = frozenset()
    users: dict[tuple[str, bool], list[dict[str, Any]] | None] = field(default_factory=dict)
    graph: RoleGraph | None = None

    async def user(
        self, user_id: str, *, as_principal: bool = False
    ) -> list[dict[str, Any]] | None:
        """A user as a resource (every role they hold), or as a principal named by another
        caller: nothing tells of a session with a second factor (``context.mfa`` is false),
        so roles that need one are not in force, as in their own password-signed tokens."""
        key = (user_id, as_principal)
        if key not in self.users:
            try:
                found = await self.session.get(User, uuid.UUID(user_id))
            except ValueError:
                found = None
            if found is None:
                self.users[key] = None
            else:
                granted = await grants_for(
                    self.session, found, mfa=not as_principal, mfa_roles=self.mfa_roles
                )
                self.users[key] = stored_user_entities(found, granted.roles, granted.permissions)
        return self.users[key]

    async def roles(self, name: str) -> list[dict[str, Any]] | None:
        if self.graph is None:
            self.graph = await roles_repo.load_graph(self.session)
        return role_entities(self.graph, [name]) if name in self.graph.nodes else None


async def _principal(
    check: CheckRequest, caller: Caller, loader: _Loader, index: int | None
) -> tuple[dict[str, str], list[dict[str, Any]], bool]:
    """The principal's uid, its entities, and whether its token says MFA."""
    given = check.principal
    own = caller.principal
    if given is None or (own is not None and given.type == "User" and given.id == str(own.user_id)):
        if own is None:
            raise _refuse("A service client must name the principal.", index)
        return uid("User", str(own.user_id)), principal_entities(own), own.mfa
    if not caller.may_check_anyone:
        if own is not None and own.needs_mfa_for("authz:check"):
            raise missing_permissions(own, ["authz:check"])  # MFA_REQUIRED
        raise Forbidden(
            "Checking another principal needs 'authz:check'.",
            code="PERMISSION_DENIED",
            data={"missing": ["authz:check"]},
        )
    if given.type != "User":
        raise _refuse(f"The principal must be a User, not {given.type!r}.", index)
    entities = await loader.user(given.id, as_principal=True)
    if entities is None:
        raise _refuse("No such User principal.", index, entity=given.model_dump())
    return uid("User", given.id), entities, False


async def _resource(
    check: CheckRequest, loader: _Loader, index: int | None
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    ref = check.resource
    if ref.type not in OWN_TYPES:
        parents = [uid(p.type, p.id) for p in ref.parents]
        return uid(ref.type, ref.id), [entity(ref.type, ref.id, ref.attributes, parents)]
    if ref.attributes is not None or ref.parents:
        raise _refuse(f"authsvc supplies the attributes and parents of {ref.type} entities.", index)
    found: list[dict[str, Any]] | None
    if ref.type == "User":
        found = await loader.user(ref.id)
    elif ref.type == "Role":
        found = await loader.roles(ref.id)
    else:
        found = [entity("AuditLog", AUDIT_LOG_ID)] if ref.id == AUDIT_LOG_ID else None
    if found is None:
        raise _refuse(f"No such {ref.type}.", index, entity=_ref(ref))
    return uid(ref.type, ref.id), found


def _ref(ref: EntityRef) -> dict[str, str]:
    return {"type": ref.type, "id": ref.id}


def _context(
    check: CheckRequest, services: AppServices, ip: str, mfa: bool, index: int | None
) -> dict[str, Any]:
    computed = sorted(COMPUTED_CONTEXT & set(check.context))
    if computed:
        raise _refuse(f"authsvc sets {', '.join(computed)} in the context.", index)
    extra = dict(check.context)
    address = extra.pop("ip", ip)
    try:
        address = str(ipaddress.ip_address(str(address)))
    except ValueError:
        raise _refuse("context.ip is not an IP address.", index) from None
    return {**extra, **request_context(address, services.settings.trusted_networks, mfa=mfa)}


async def _evaluate(
    check: CheckRequest,
    caller: Caller,
    loader: _Loader,
    services: AppServices,
    bundle: PolicyBundle,
    ip: str,
    index: int | None = None,
) -> CheckResult:
    principal, principal_ents, mfa = await _principal(check, caller, loader, index)
    resource, resource_ents = await _resource(check, loader, index)
    started = time.perf_counter()  # the decision, not the database reads before it
    request = CedarRequest(
        principal, check.action, resource, _context(check, services, ip, mfa, index)
    )
    try:
        decision = decide(bundle, request, merge_entities(principal_ents, resource_ents))
    except RequestInvalid as exc:
        # Cedar's text quotes whole entities (emails, roles, attributes): say it our way.
        reason = explain(
            str(exc), bundle, principal_ents, resource_ents,
            resource_stored=check.resource.type in OWN_TYPES,
        )  # fmt: skip
        raise _refuse(reason, index) from None
    if principal_ents[0]["attrs"].get("is_active") is False:
        decision = Decision(False, [], ["the principal's account is deactivated"])
    services.metrics.policy_latency.labels("api").observe(time.perf_counter() - started)
    services.metrics.policy_decisions.labels(decision.word, "api").inc()
    return CheckResult(decision=decision.word, reasons=decision.reasons, errors=decision.errors)


async def check(
    db: AsyncSession,
    services: AppServices,
    caller: UserCaller | ClientCaller,
    body: CheckRequest,
    ip: str,
) -> CheckResult:
    bundle = services.policies.bundle  # one set for the whole answer, even across a reload
    return await _evaluate(
        body,
        _asker(caller),
        _Loader(db, frozenset(services.settings.mfa_required_roles)),
        services,
        bundle,
        ip,
    )


async def check_batch(
    db: AsyncSession,
    services: AppServices,
    caller: UserCaller | ClientCaller,
    body: BatchCheckRequest,
    ip: str,
) -> BatchCheckResult:
    bundle, asker = services.policies.bundle, _asker(caller)
    loader = _Loader(db, frozenset(services.settings.mfa_required_roles))
    results = [
        await _evaluate(item, asker, loader, services, bundle, ip, index)
        for index, item in enumerate(body.checks)
    ]
    return BatchCheckResult(results=results)
