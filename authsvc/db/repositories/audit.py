"""Queries on the audit trail. No commits, no HTTP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, select

from authsvc.db.models import AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    """Every field given narrows the trail; ``since`` is inclusive, ``until`` exclusive."""

    actor_id: uuid.UUID | None = None
    target_type: str | None = None
    target_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def events_query(filters: AuditFilter) -> Select[tuple[AuditEvent]]:
    """The matching events, newest first (``id`` breaks ties: one stable order for paging)."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id)
    if filters.actor_id is not None:
        query = query.where(AuditEvent.actor_id == filters.actor_id)
    if filters.target_type is not None:
        query = query.where(AuditEvent.target_type == filters.target_type)
    if filters.target_id is not None:
        query = query.where(AuditEvent.target_id == filters.target_id)
    if filters.action is not None:
        query = query.where(AuditEvent.action == filters.action)
    if filters.since is not None:
        query = query.where(AuditEvent.at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.at < filters.until)
    return query
