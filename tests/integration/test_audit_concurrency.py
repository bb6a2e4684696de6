"""The audit chain under concurrent writers on PostgreSQL: 8 sessions, each on its own
connection, commit events at the same time (some roll back); the chain stays gap-free and
intact, and verifying it while they write never reports a break that is not there."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from authsvc.services import audit_chain
from authsvc.services.audit import AuditService
from authsvc.services.container import AppServices

WRITERS = 8
COMMITS = 25


async def _writer(services: AppServices, number: int, start: asyncio.Barrier) -> int:
    """``COMMITS`` committed transactions of one or two events; every fifth one also rolls a
    flushed event back first (it must never enter the chain). Returns the events committed."""
    committed = 0
    async with services.sessionmaker() as session:
        await session.execute(text("SELECT 1"))  # hold a connection before the start line
        await start.wait()
        for step in range(COMMITS):
            audit = AuditService(session)
            if step % 5 == 4:
                audit.record("test.rolled_back", "writer", str(number), None, None)
                await session.flush()  # held back: only a commit chains
                await asyncio.sleep(0)
                await session.rollback()
            for _ in range(1 + step % 2):
                audit.record("test.write", "writer", str(number), None, {"step": step})
                committed += 1
            await session.flush()
            await asyncio.sleep(0)  # let the others queue on the head row meanwhile
            await session.commit()
    return committed


async def test_eight_concurrent_writers_keep_the_chain_intact(
    services: AppServices, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks across connections: PostgreSQL (SQLite has one writer)")
    start = asyncio.Barrier(WRITERS + 1)
    writers = [asyncio.create_task(_writer(services, n, start)) for n in range(WRITERS)]
    await start.wait()
    reports = []
    while not all(task.done() for task in writers):  # verify while they write
        async with services.sessionmaker() as session:
            reports.append(await audit_chain.verify(session, page_size=16))
    total = sum(await asyncio.gather(*writers))

    assert all(report.intact for report in reports), [r for r in reports if not r.intact]
    async with services.engine.connect() as conn:
        seqs = (await conn.execute(text("SELECT seq FROM audit_events ORDER BY seq"))).scalars()
        assert list(seqs) == list(range(1, total + 1))
        actions = await conn.execute(text("SELECT DISTINCT action FROM audit_events"))
        assert set(actions.scalars()) == {"test.write"}
    async with services.sessionmaker() as session:
        report = await audit_chain.verify(session)
    assert report == audit_chain.ChainReport(True, total, None)
    assert total == WRITERS * sum(1 + step % 2 for step in range(COMMITS))


async def test_the_head_lock_is_taken_at_commit_not_at_an_earlier_flush(
    services: AppServices, database_url: str
) -> None:
    """A sign-in that records its event and then still reads (an autoflush) or signs must
    not hold every other writer back meanwhile."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks: PostgreSQL")
    lock_now = text("SELECT seq FROM audit_chain_head WHERE id = 1 FOR UPDATE NOWAIT")
    async with services.sessionmaker() as early, services.sessionmaker() as other:
        AuditService(early).record("test.early", "t", "1", None, None)
        await early.execute(text("SELECT 1"))  # autoflush
        await early.flush()
        await other.execute(lock_now)  # NOWAIT: raises at once if the head were locked
        await other.rollback()
        await early.commit()
    async with services.sessionmaker() as session:
        assert (await audit_chain.verify(session)).intact
