"""The hash chain over the audit trail: how events are linked, and how the links are checked.

Each event stores ``seq`` (1..N without gaps), ``prev_digest`` (the previous event's digest,
64 zeros for the first) and ``digest`` = SHA-256 over its canonical form (``canonical``): every
column, ``prev_digest`` included, so changing, removing, adding or reordering a row breaks a
link that ``ChainVerifier`` names. The one-row table ``audit_chain_head`` holds the last seq and
digest, so removing the newest rows shows too.

How the head is serialized: a ``before_flush`` listener on SQLAlchemy's ``Session`` class (it
runs for every session, async ones included, whoever adds the ``AuditEvent``) holds new events
back until ``commit()`` and until the transaction's other writes are flushed, then chains them
in a flush of their own, the last before the COMMIT (``before_commit`` and
``after_flush_postexec`` put them back). One statement reserves the seqs and reads the digest
to link to: ``INSERT INTO audit_chain_head ... ON CONFLICT (id) DO UPDATE SET seq = seq + n
RETURNING seq, digest`` (an upsert, so a missing head row is the empty chain); a second stores
the new last digest, then the events are inserted. On PostgreSQL the first statement takes the
head row's lock, held until the transaction ends: writers in every worker and on every host
queue on that one row lock, each for no longer than its last flush and its COMMIT, and as it
is the last lock a transaction takes, holding it never waits on another lock (no deadlock).
Under READ COMMITTED the statement that waited reads the head the winner committed. SQLite
serializes writers on its database lock anyway. A rollback gives the seqs back with the lock,
so the chain stays gap-free. Inside a savepoint (``begin_nested``) events are chained at once,
as a savepoint's rollback must take them along.

What it proves: that nobody changed the stored trail without also recomputing every later
digest and the head. Someone with write access could do that; the copies outside the database
(each event's log line carries its digest, ``authsvc audit export`` feeds a SIEM) then disagree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from authsvc.db.models import AuditEvent, utcnow
from authsvc.db.repositories import audit as audit_repo
from authsvc.observability import request_id_var, user_agent_var

GENESIS = "0" * 64
PAGE_SIZE = 1000
# The columns the digest covers, besides ``digest`` itself.
CHAINED_FIELDS = (
    "id", "seq", "at", "actor_id", "actor_email", "action", "target_type", "target_id",
    "before", "after", "client_ip", "user_agent", "request_id", "prev_digest",
)  # fmt: skip
# session.info keys: events held back until the commit, the commit under way, events to log
# once committed.
_HELD, _COMMITTING, _LOGGED = "audit_chain.held", "audit_chain.committing", "audit_chain.logged"
audit_log = logging.getLogger("authsvc.audit")


def event_record(row: Any) -> dict[str, Any]:
    """An event (ORM object, row mapping or dict) as JSON-ready values: the canonical
    fields plus ``digest``. The export writes exactly this, so a SIEM can recheck it."""
    get = row.get if isinstance(row, Mapping) else lambda name: getattr(row, name)
    record: dict[str, Any] = {}
    for name in (*CHAINED_FIELDS, "digest"):
        value = get(name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=UTC)
            value = aware.astimezone(UTC).isoformat(timespec="microseconds")
        record[name] = value
    return record


def canonical(record: Mapping[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8 as is: one byte string per event on every engine."""
    body = {name: record[name] for name in CHAINED_FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def digest_of(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


@dataclass(frozen=True)
class BrokenLink:
    seq: int
    id: str | None
    # digest_mismatch: the row was changed; missing: a seq is absent (a row deleted);
    # prev_mismatch: a row that does not follow its predecessor (inserted or reordered);
    # head_mismatch: the head disagrees with the last row (the newest rows deleted).
    reason: str


@dataclass(frozen=True)
class ChainReport:
    intact: bool
    events: int
    first_broken: BrokenLink | None


class ChainVerifier:
    """Pure: feed records in seq order, then ``finish`` with the head. Only the first broken
    link is kept (everything after it follows from it); the rest is still counted."""

    def __init__(self) -> None:
        self.events = 0
        self.broken: BrokenLink | None = None
        self._expected = 1
        self._prev = GENESIS

    def feed(self, record: Mapping[str, Any]) -> None:
        self.events += 1
        if self.broken is not None:
            return
        seq, event_id = record["seq"], record["id"]
        if not isinstance(seq, int):  # SQLite stores text in an integer column if told to
            self.broken = BrokenLink(self._expected, event_id, "prev_mismatch")
        elif seq > self._expected:
            self.broken = BrokenLink(self._expected, None, "missing")
        elif seq < self._expected or record["prev_digest"] != self._prev:
            self.broken = BrokenLink(seq, event_id, "prev_mismatch")
        elif record.get("unreadable") or digest_of(record) != record["digest"]:
            self.broken = BrokenLink(seq, event_id, "digest_mismatch")
        else:
            self._expected += 1
            self._prev = record["digest"]

    def finish(self, head_seq: int, head_digest: str) -> ChainReport:
        if self.broken is None and (head_seq, head_digest) != (self._expected - 1, self._prev):
            self.broken = BrokenLink(head_seq, None, "head_mismatch")
        return ChainReport(self.broken is None, self.events, self.broken)


async def stream_records(
    db: AsyncSession,
    *,
    since: datetime | None = None,
    after_seq: int | None = None,
    until_seq: int | None = None,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[dict[str, Any]]:
    """Events in seq order, one page in memory at a time (keyset paging on seq)."""
    while True:
        bounds: dict[str, Any] = {"since": since, "until_seq": until_seq}
        try:
            query = audit_repo.chain_page(after_seq, page_size, **bounds)
            records = [event_record(row._mapping) for row in (await db.execute(query)).all()]
        except ValueError:  # a stored value that no longer decodes: find it row by row
            keys = audit_repo.chain_page(after_seq, page_size, keys_only=True, **bounds)
            records = [await _one_record(db, key) for key in (await db.execute(keys)).all()]
        for record in records:
            yield record
        if len(records) < page_size:
            return
        after_seq = records[-1]["seq"]


async def _one_record(db: AsyncSession, key: Any) -> dict[str, Any]:
    try:
        return event_record((await db.execute(audit_repo.chain_row(key.seq))).one()._mapping)
    except ValueError:  # e.g. text that is not JSON in ``after``: a changed row
        return {**key._mapping, "id": str(key.id), "unreadable": True}


async def verify(db: AsyncSession, page_size: int = PAGE_SIZE) -> ChainReport:
    """The whole trail against its chain and its head, while writers may be appending.

    The head is read after the rows: a legitimate row commits together with the head that
    counts it, so a row read beyond that head was not put there by the chain. Rows committed
    while the pages were read are caught up to that head, and no further.
    """
    verifier = ChainVerifier()
    last = 0
    async for record in stream_records(db, page_size=page_size):
        verifier.feed(record)
        last = record["seq"] if isinstance(record["seq"], int) else last
    head = (await db.execute(audit_repo.read_head())).one_or_none()
    head_seq, head_digest = (head.seq, head.digest) if head else (0, GENESIS)
    if head_seq > last:
        catch_up = stream_records(db, after_seq=last, until_seq=head_seq, page_size=page_size)
        async for record in catch_up:
            verifier.feed(record)
    return verifier.finish(head_seq, head_digest)


async def export_lines(db: AsyncSession, since: datetime | None = None) -> AsyncIterator[str]:
    """JSON lines for a SIEM, in seq order: each event's canonical fields and digest."""
    async for record in stream_records(db, since=since):
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _chain_new_events(session: Session, _context: UOWTransaction, _instances: object) -> None:
    """before_flush: give the session's new events their seq, links and digests, at the
    commit's flush only; an earlier flush (an autoflush before a query, say) holds them back
    so the head's lock is taken as late as possible, however early they were recorded."""
    events = [obj for obj in session.new if isinstance(obj, AuditEvent)]
    if not events:
        return
    for item in events:  # when it happened, not when it was committed
        item.id = item.id or uuid.uuid4()
        item.at = item.at or utcnow()
    others = session.dirty or session.deleted or len(session.new) > len(events)
    if not session.in_nested_transaction() and (others or not session.info.get(_COMMITTING)):
        # Not yet: the head must be the last lock the transaction takes. Taken before the
        # flush's own row locks, a PATCH and a DELETE of one user deadlock on it.
        for item in events:
            session.expunge(item)
        session.info.setdefault(_HELD, []).extend(events)
        return
    events.sort(key=lambda item: item.at)
    for item in events:
        request_id = item.request_id or request_id_var.get()
        item.request_id = request_id[:128] if request_id else None
        item.user_agent = (item.user_agent or user_agent_var.get() or "")[:256] or None
    connection = session.connection()
    statement = audit_repo.advance_head(connection.dialect.name, len(events), GENESIS)
    head = connection.execute(statement).one()
    seq, prev = head.seq - len(events), head.digest
    for item in events:
        seq += 1
        item.seq, item.prev_digest = seq, prev
        item.digest = prev = digest_of(event_record(item))
    connection.execute(audit_repo.set_head_digest(prev))
    session.info.setdefault(_LOGGED, []).extend(events)


def _release_held(session: Session) -> None:
    """before_commit: the held events go into the commit's flush (it follows this hook)."""
    session.info[_COMMITTING] = True
    session.add_all(session.info.pop(_HELD, ()))


def _requeue_held(session: Session, _context: UOWTransaction) -> None:
    """after_flush_postexec: events held back from a commit's flush that had other writes
    come back; commit() flushes again while the session is not clean, events alone now."""
    if session.info.get(_COMMITTING) and session.info.get(_HELD):
        session.add_all(session.info.pop(_HELD))


def _log_committed(session: Session) -> None:
    """after_commit: one structured line per stored event (ASVS V16.3). Only the keys of
    before/after: their values are for the trail, not for every log reader."""
    session.info.pop(_COMMITTING, None)
    for item in session.info.pop(_LOGGED, ()):
        audit_log.info(
            "audit event %s",
            item.action,
            extra={
                "audit": {
                    "event_id": str(item.id),
                    "seq": item.seq,
                    "digest": item.digest,
                    "action": item.action,
                    "actor_id": str(item.actor_id) if item.actor_id else None,
                    "target_type": item.target_type,
                    "target_id": item.target_id,
                    "client_ip": item.client_ip,
                    "user_agent": item.user_agent,
                    "request_id": item.request_id,
                    "before_keys": sorted(item.before or {}),
                    "after_keys": sorted(item.after or {}),
                }
            },
        )


def _forget_rolled_back(session: Session) -> None:
    for key in (_LOGGED, _HELD, _COMMITTING):
        session.info.pop(key, None)


_LISTENERS = (
    ("before_flush", _chain_new_events),
    ("before_commit", _release_held),
    ("after_flush_postexec", _requeue_held),
    ("after_commit", _log_committed),
    ("after_rollback", _forget_rolled_back),
)


def install() -> None:
    """Chain every session's events (done at import; idempotent)."""
    for name, listener in _LISTENERS:
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)


def uninstall() -> None:
    """Stop chaining: for bench/audit_chain.py's "without the chain" rounds only."""
    for name, listener in _LISTENERS:
        if event.contains(Session, name, listener):
            event.remove(Session, name, listener)


install()
