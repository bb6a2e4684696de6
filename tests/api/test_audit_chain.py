"""The security trail's hash chain: every kind of tampering is found and named, events carry
their context, each becomes a log line, and the export matches the stored chain."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from authsvc.db.models import AuditEvent, utcnow
from authsvc.observability import JsonFormatter
from authsvc.services import audit_chain
from authsvc.services.audit import AuditService
from authsvc.services.container import AppServices

EVENTS = 4
UA = "Mozilla/5.0 (tamper test) " + "x" * 300  # longer than the column: cut to 256


async def _make_events(client: httpx.AsyncClient, admin: dict[str, str], count: int) -> None:
    """``count`` events through the API (each new role is one)."""
    for number in range(count):
        response = await client.post(
            "/roles",
            headers={**admin, "User-Agent": UA, "X-Request-ID": f"req-{number}"},
            json={"name": f"clerk-{number}"},
        )
        assert response.status_code == 201, response.text


async def _verify(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/audit/verify", headers=admin)
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


async def _sql(services: AppServices, statement: str, **params: Any) -> list[Any]:
    async with services.engine.begin() as conn:
        result = await conn.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


async def _ids(services: AppServices) -> dict[int, str]:
    rows = await _sql(services, "SELECT seq, id FROM audit_events ORDER BY seq")
    return {int(seq): str(uuid.UUID(str(event_id))) for seq, event_id in rows}


@pytest.fixture
async def trail(
    client: httpx.AsyncClient, admin_headers: dict[str, str], services: AppServices
) -> dict[int, str]:
    """An intact trail of ``EVENTS`` events or more: seq -> id."""
    await _make_events(client, admin_headers, EVENTS)
    ids = await _ids(services)
    assert len(ids) >= EVENTS
    return ids


async def test_an_untouched_trail_is_intact_and_gap_free(
    client: httpx.AsyncClient, admin_headers: dict[str, str], trail: dict[int, str]
) -> None:
    assert list(trail) == list(range(1, len(trail) + 1))
    report = await _verify(client, admin_headers)
    assert report == {"intact": True, "events": len(trail), "first_broken": None}


async def test_an_empty_trail_is_intact(
    client: httpx.AsyncClient, admin_headers: dict[str, str], services: AppServices
) -> None:
    await _sql(services, "DELETE FROM audit_events")
    await _sql(services, "DELETE FROM audit_chain_head")
    assert await _verify(client, admin_headers) == {
        "intact": True,
        "events": 0,
        "first_broken": None,
    }


async def test_events_carry_user_agent_and_request_id(
    client: httpx.AsyncClient, admin_headers: dict[str, str], trail: dict[int, str]
) -> None:
    listing = await client.get("/audit", headers=admin_headers, params={"action": "role.create"})
    items = listing.json()["items"]
    assert {item["request_id"] for item in items} == {f"req-{n}" for n in range(EVENTS)}
    assert {item["user_agent"] for item in items} == {UA[:256]}


async def test_a_changed_row_is_a_digest_mismatch(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    await _sql(services, "UPDATE audit_events SET target_id = 'someone-else' WHERE seq = 2")
    report = await _verify(client, admin_headers)
    assert report["intact"] is False
    assert report["events"] == len(trail)
    assert report["first_broken"] == {"seq": 2, "id": trail[2], "reason": "digest_mismatch"}


async def test_a_deleted_middle_row_is_missing(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    await _sql(services, "DELETE FROM audit_events WHERE seq = 2")
    report = await _verify(client, admin_headers)
    assert report["first_broken"] == {"seq": 2, "id": None, "reason": "missing"}
    assert report["events"] == len(trail) - 1


async def test_deleted_newest_rows_are_a_head_mismatch(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    last = max(trail)
    await _sql(services, "DELETE FROM audit_events WHERE seq = :seq", seq=last)
    report = await _verify(client, admin_headers)
    assert report["first_broken"] == {"seq": last, "id": None, "reason": "head_mismatch"}


async def test_a_deleted_head_row_is_a_head_mismatch(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    await _sql(services, "DELETE FROM audit_chain_head")
    report = await _verify(client, admin_headers)
    assert report["first_broken"] == {"seq": 0, "id": None, "reason": "head_mismatch"}


async def test_swapped_rows_are_a_prev_mismatch(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    # Through a free seq: the unique index holds at every step.
    await _sql(services, "UPDATE audit_events SET seq = -1 WHERE seq = 2")
    await _sql(services, "UPDATE audit_events SET seq = 2 WHERE seq = 3")
    await _sql(services, "UPDATE audit_events SET seq = 3 WHERE seq = -1")
    report = await _verify(client, admin_headers)
    assert report["first_broken"] == {"seq": 2, "id": trail[3], "reason": "prev_mismatch"}


async def _forge(services: AppServices, seq: int, prev: str, digest: str | None = None) -> str:
    """Insert an event behind the chain's back (as any database writer could)."""
    forged = AuditEvent(
        id=uuid.uuid4(), at=utcnow(), actor_id=None, actor_email="mallory@example.com",
        action="role.delete", target_type="role", target_id="clerk-0", before=None, after=None,
        client_ip=None, user_agent=None, request_id=None, seq=seq, prev_digest=prev,
    )  # fmt: skip
    forged.digest = digest or audit_chain.digest_of(audit_chain.event_record(forged))
    audit_chain.uninstall()  # a raw writer: no chain listener
    try:
        async with services.sessionmaker() as session:
            session.add(forged)
            await session.commit()
    finally:
        audit_chain.install()
    return str(forged.id)


async def test_an_inserted_row_is_a_prev_mismatch(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    seq = max(trail) + 1
    forged = await _forge(services, seq, "f" * 64)
    report = await _verify(client, admin_headers)
    assert report["first_broken"] == {"seq": seq, "id": forged, "reason": "prev_mismatch"}


async def test_a_row_inserted_before_the_first_is_a_prev_mismatch(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    forged = await _forge(services, 0, audit_chain.GENESIS)
    report = await _verify(client, admin_headers)
    assert report["first_broken"] == {"seq": 0, "id": forged, "reason": "prev_mismatch"}


async def test_a_well_linked_row_appended_without_the_head_is_a_head_mismatch(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
) -> None:
    last = max(trail)
    (prev,) = (await _sql(services, "SELECT digest FROM audit_events WHERE seq = :s", s=last))[0]
    await _forge(services, last + 1, prev)
    report = await _verify(client, admin_headers)
    assert report["first_broken"] == {"seq": last, "id": None, "reason": "head_mismatch"}


async def test_verification_pages_through_the_trail(
    services: AppServices, trail: dict[int, str]
) -> None:
    async with services.sessionmaker() as session:
        report = await audit_chain.verify(session, page_size=2)
    assert report.intact and report.events == len(trail)
    await _sql(services, "UPDATE audit_events SET action = 'x' WHERE seq = 3")
    async with services.sessionmaker() as session:
        report = await audit_chain.verify(session, page_size=2)
    assert report.first_broken == audit_chain.BrokenLink(3, trail[3], "digest_mismatch")


async def test_verify_needs_audit_read(
    client: httpx.AsyncClient, make_user: Any, login: Any
) -> None:
    await make_user("someone@example.com")
    headers = await login("someone@example.com")
    response = await client.get("/audit/verify", headers=headers)
    assert response.status_code == 403
    assert response.json()["detail"]["code"] == "POLICY_DENIED"
    assert (await client.get("/audit/verify")).status_code == 401


async def test_each_committed_event_is_a_log_line_with_its_context(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="authsvc.audit")
    response = await client.post(
        "/roles",
        headers={**admin_headers, "User-Agent": "agent/1.0", "X-Request-ID": "trace-42"},
        json={"name": "logged", "description": "not for every log reader"},
    )
    assert response.status_code == 201, response.text
    records = [
        r for r in caplog.records
        if r.name == "authsvc.audit" and r.audit["action"] == "role.create"  # type: ignore[attr-defined]
    ]  # fmt: skip
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["action"] == "role.create"
    assert line["request_id"] == "trace-42"
    assert line["user_agent"] == "agent/1.0"
    assert line["client_ip"] == "203.0.113.10"
    assert line["target_type"] == "role"
    uuid.UUID(line["event_id"])
    assert len(line["digest"]) == 64
    # The keys of before/after, never their values.
    assert "not for every log reader" not in json.dumps(line)


async def test_an_event_rolled_back_is_not_chained_nor_logged(
    services: AppServices, client: httpx.AsyncClient, admin_headers: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, logger="authsvc.audit")
    async with services.sessionmaker() as session:
        session.add(AuditEvent(action="x", target_type="t", target_id="1"))
        await session.flush()
        await session.rollback()
        # Added directly, as services/users.py does: chained all the same.
        session.add(AuditEvent(action="direct", target_type="t", target_id="2"))
        await session.commit()
    await _make_events(client, admin_headers, 1)
    ids = await _ids(services)
    assert list(ids) == list(range(1, len(ids) + 1))
    actions = await _sql(services, "SELECT action FROM audit_events")
    assert ("x",) not in actions and {("direct",), ("role.create",)} <= set(actions)
    logged = [r.audit["action"] for r in caplog.records if r.name == "authsvc.audit"]  # type: ignore[attr-defined]
    assert "x" not in logged and {"direct", "role.create"} <= set(logged)
    assert (await _verify(client, admin_headers))["intact"] is True


async def test_export_lines_match_the_stored_chain(
    services: AppServices, trail: dict[int, str]
) -> None:
    async with services.sessionmaker() as session:
        lines = [line async for line in audit_chain.export_lines(session)]
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(trail)
    assert [r["id"] for r in records] == list(trail.values())
    verifier = audit_chain.ChainVerifier()
    for record in records:  # a SIEM can recheck the chain from the export alone
        verifier.feed(record)
    assert verifier.finish(max(trail), records[-1]["digest"]).intact
    since = records[2]["at"]
    async with services.sessionmaker() as session:
        later = audit_chain.export_lines(session, datetime.fromisoformat(since))
        chosen = [json.loads(line)["seq"] async for line in later]
    assert chosen == [r["seq"] for r in records if r["at"] >= since]


@pytest.mark.parametrize(
    ("column", "value"),
    [("after", "{not json"), ("at", "yesterday"), ("actor_id", "nobody"), ("seq", "two")],
)
async def test_a_value_that_no_longer_decodes_is_named_not_a_500(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    services: AppServices,
    trail: dict[int, str],
    database_url: str,
    column: str,
    value: str,
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's column types refuse such values")
    await _sql(services, f"UPDATE audit_events SET {column} = :v WHERE seq = 2", v=value)
    report = await _verify(client, admin_headers)
    assert report["intact"] is False
    if column == "seq":  # text sorts after every number: seq 2 is gone from the order
        assert report["first_broken"] == {"seq": 2, "id": None, "reason": "missing"}
    else:
        assert report["first_broken"] == {"seq": 2, "id": trail[2], "reason": "digest_mismatch"}
    exported = run_export(services)
    assert len(await exported) == len(trail)


async def run_export(services: AppServices) -> list[str]:
    async with services.sessionmaker() as session:
        return [line async for line in audit_chain.export_lines(session)]


async def test_events_recorded_early_are_chained_at_the_commit(
    services: AppServices, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    async with services.sessionmaker() as session:
        event = AuditService(session).record("test.early", "t", "1", None, None)
        await session.flush()  # held back: the head is not touched before the commit
        assert event.id is not None and event.at is not None
        assert ("test.early",) not in await _sql(services, "SELECT action FROM audit_events")
        await session.commit()
    rows = await _sql(services, "SELECT action, seq FROM audit_events WHERE action = 'test.early'")
    assert rows == [("test.early", event.seq)]
    assert (await _verify(client, admin_headers))["intact"] is True
