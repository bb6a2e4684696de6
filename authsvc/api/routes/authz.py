"""The decision API (``POST /authz/check``, ``/authz/check/batch``) and the policy set
(``GET /authz/policies``, ``POST /authz/policies/reload``)."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter

from authsvc.api.deps import ClientIP, ServicesDep, SessionDep
from authsvc.api.guards import AnyCaller, require_permissions
from authsvc.authz.cedar import (
    PolicyBundle,
    PolicyLoadError,
)
from authsvc.authz.engine import Principal
from authsvc.errors import InvalidInput
from authsvc.schemas.policies import (
    BatchCheckRequest,
    BatchCheckResult,
    CheckRequest,
    CheckResult,
    PolicyInfo,
    PolicySetRead,
)
from authsvc.services import checks
from authsvc.services.audit import AuditService
from authsvc.services.policies import POLICY_INVALID, reload_recorded

router = APIRouter(tags=["authz"])

_CHECK_DOC = (
    "Answers `decision` (`allow`/`deny`), `reasons` (the deciding policy `@id`s) and `errors`. "
    "Callers: a signed-in user (principal defaults to themself), or a service client "
    "(client_credentials token) naming the principal. Checking a principal other than "
    "yourself needs `authz:check`. 422 `AUTHZ_CHECK_INVALID` for an unknown principal or "
    "resource, an action or entity type the schema does not declare, or a context that does "
    "not fit the action."
)


@router.post(
    "/check", response_model=CheckResult, summary="Ask the policies for a decision",
    description=_CHECK_DOC,
)  # fmt: skip
async def check(
    body: CheckRequest, caller: AnyCaller, services: ServicesDep, db: SessionDep, ip: ClientIP
) -> CheckResult:
    return await checks.check(db, services, caller, body, ip)


@router.post(
    "/check/batch",
    response_model=BatchCheckResult,
    summary="Ask for up to 100 decisions at once",
    description="Each check as in `POST /authz/check`, all against the same policy set. One "
    "malformed check refuses the whole batch (422, with its `index`).",
)
async def check_batch(
    body: BatchCheckRequest,
    caller: AnyCaller,
    services: ServicesDep,
    db: SessionDep,
    ip: ClientIP,
) -> BatchCheckResult:
    return await checks.check_batch(db, services, caller, body, ip)


def _describe(bundle: PolicyBundle) -> PolicySetRead:
    return PolicySetRead(
        digest=bundle.digest,
        loaded_at=bundle.loaded_at,
        worker_pid=os.getpid(),
        policies=[
            PolicyInfo(id=pid, file=bundle.files[pid], effect=bundle.effects[pid])
            for pid in bundle.ids
        ],
    )


@router.get(
    "/policies",
    response_model=PolicySetRead,
    summary="The policy set in force (in the worker that answers)",
    dependencies=[require_permissions("policies:read")],
)
async def read_policies(services: ServicesDep) -> PolicySetRead:
    return _describe(services.policies.bundle)


@router.post(
    "/policies/reload",
    response_model=PolicySetRead,
    summary="Reload the policies from their folder",
    description="Validates the folder's schema and policies, then swaps them in at once; the "
    "other workers follow within about a second. 422 `POLICY_INVALID` (with every problem's "
    "file and policy id) leaves the loaded set in force. SIGHUP to a worker does the same. "
    "Recorded in the audit trail (`policy.reload`, with the new and previous digests), a "
    "refused reload too.",
)
async def reload_policies(
    services: ServicesDep,
    db: SessionDep,
    principal: Annotated[Principal, require_permissions("policies:write")],
    ip: ClientIP,
) -> PolicySetRead:
    # The reload touches no table; the request's session carries its audit event.
    try:
        bundle = await reload_recorded(services.policies, AuditService(db, principal, ip))
    except PolicyLoadError as exc:
        raise InvalidInput(
            "The policies are invalid; the loaded set stays in force.",
            code=POLICY_INVALID,
            data={"problems": [p.as_dict() for p in exc.problems]},
        ) from None
    return _describe(bundle)
