"""Queries on the audit trail. No commits, no HTTP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, String, Table, Update, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from authsvc.db.models import AuditChainHead, AuditEvent


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


# The hash chain (services/audit_chain.py). Core statements on the tables: the chain is read
# by the million and written inside a flush, where neither ORM identity nor events belong.
_events = AuditEvent.__table__
_head = cast(Table, AuditChainHead.__table__)
HEAD_ID = 1


def chain_page(
    after_seq: int | None,
    limit: int,
    *,
    since: datetime | None = None,
    until_seq: int | None = None,
    keys_only: bool = False,
) -> Select[Any]:
    """Up to ``limit`` events in seq order after ``after_seq`` (keyset paging: no OFFSET).
    ``keys_only``: just seq, id (as stored text) and the links (for rows whose values no longer
    decode: SQLite keeps whatever a writer puts in a column)."""
    columns = (
        [
            _events.c.seq,
            type_coerce(_events.c.id, String).label("id"),
            _events.c.prev_digest,
            _events.c.digest,
        ]
        if keys_only
        else [_events]
    )
    query = select(*columns).order_by(_events.c.seq).limit(limit)
    if after_seq is not None:
        query = query.where(_events.c.seq > after_seq)
    if until_seq is not None:
        query = query.where(_events.c.seq <= until_seq)
    if since is not None:
        query = query.where(_events.c.at >= since)
    return query


def chain_row(seq: int) -> Select[Any]:
    return select(_events).where(_events.c.seq == seq)


def read_head() -> Select[Any]:
    """The head row; none means the empty chain (seq 0, 64 zeros)."""
    return select(_head.c.seq, _head.c.digest).where(_head.c.id == HEAD_ID)


def advance_head(dialect: str, count: int, genesis: str) -> ReturningInsert[Any]:
    """Reserve ``count`` seqs and read the digest to link to, in one statement that takes the
    head row's lock (held to the end of the transaction). An upsert, so that a missing head
    row (a wiped trail) is the empty chain, even for concurrent first writers: PostgreSQL's
    ON CONFLICT makes the second one wait and then update."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_head).values(id=HEAD_ID, seq=count, digest=genesis)
    return statement.on_conflict_do_update(
        index_elements=[_head.c.id], set_={"seq": _head.c.seq + count}
    ).returning(_head.c.seq, _head.c.digest)


def set_head_digest(digest: str) -> Update:
    return update(_head).where(_head.c.id == HEAD_ID).values(digest=digest)
