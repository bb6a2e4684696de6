"""``GET /audit``: the security trail; ``GET /audit/verify``: its hash chain checked."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BeforeValidator

from authsvc.api.deps import SessionDep
from authsvc.api.guards import audit_resource, authorize, policy_doc
from authsvc.schemas.audit import ChainReport
from authsvc.schemas.authz import AuditEventRead, AuditPage
from authsvc.services import audit_chain
from authsvc.services.audit import AuditFilter, AuditService


def _iso_only(value: object) -> object:
    """Pydantic also reads a number ("0.5") as a Unix time; the document promises an ISO 8601
    date-time, so only that is accepted (422 otherwise)."""
    try:
        float(str(value))
    except ValueError:
        return value
    raise ValueError("expected an ISO 8601 date-time with an offset, not a number")


IsoDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]

router = APIRouter(tags=["audit"])


@router.get(
    "/audit",
    response_model=AuditPage,
    summary="The audit trail, newest first",
    description="403 `POLICY_DENIED` when the policies refuse (action `audit:read`; by "
    "default: without the `audit:read` permission).",
    dependencies=[authorize("audit:read", audit_resource)],
    openapi_extra=policy_doc("audit:read"),
)
async def list_events(
    db: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    actor_id: uuid.UUID | None = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[
        IsoDatetime | None, Query(description="Inclusive; ISO 8601 with an offset.")
    ] = None,
    until: Annotated[
        IsoDatetime | None, Query(description="Exclusive; ISO 8601 with an offset.")
    ] = None,
) -> AuditPage:
    filters = AuditFilter(actor_id, target_type, target_id, action, since, until)
    events, total = await AuditService(db).events(filters, limit=limit, offset=offset)
    return AuditPage(
        items=[AuditEventRead.model_validate(e) for e in events],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/audit/verify",
    response_model=ChainReport,
    summary="Check the trail's hash chain",
    description="Recomputes every event's digest and link in seq order and names the first "
    "broken link (200 either way: a broken chain is a finding, not an error). It reads the "
    "whole trail, in pages. 403 `POLICY_DENIED` when the policies refuse (action "
    "`audit:read`; by default: without the `audit:read` permission).",
    dependencies=[authorize("audit:read", audit_resource)],
    openapi_extra=policy_doc("audit:read"),
)
async def verify_chain(db: SessionDep) -> ChainReport:
    return ChainReport.model_validate(await audit_chain.verify(db), from_attributes=True)
