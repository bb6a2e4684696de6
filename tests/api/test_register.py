"""``POST /auth/register``: the verification mail, and (with verification required, the
default) one answer for new and taken addresses after the same work (issue 13, email)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from authsvc.db.models import AuditEvent, User
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, MakeUser, delivered, row_count, token_from_console

ACCEPTED = {
    "status": "verification_sent",
    "message": "If the address can be registered, a message with a verification link was "
    "sent to it.",
}
ATTEMPT_SUBJECT = "Someone tried to register with your address"
VERIFY_SUBJECT = "Verify your email address"


def mails(output: str) -> list[tuple[str, str, str]]:
    """(to, subject, body) of each message the console notifier printed."""
    return re.findall(r"--- mail to (\S+): (.*?) ---\n(.*?)\n---\n", output, re.S)


async def register(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/auth/register", json={"email": email, "password": password})


@pytest.fixture
def work(services: AppServices, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each expensive hasher operation ran (wrapped, still doing the real work)."""
    counts: Counter[str] = Counter()
    hasher = services.hasher

    def counting(name: str) -> Callable[..., Awaitable[Any]]:
        real = getattr(hasher, name)

        async def wrapper(*args: Any) -> Any:
            counts[name] += 1
            return await real(*args)

        return wrapper

    for name in ("hash", "verify", "verify_and_update", "dummy_verify"):
        monkeypatch.setattr(hasher, name, counting(name))
    return counts


async def audit_actions(services: AppServices) -> list[str]:
    async with services.sessionmaker() as db:
        return list((await db.scalars(select(AuditEvent.action))).all())


async def test_new_and_taken_addresses_get_the_same_answer_after_the_same_work(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    work: Counter[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner = await make_user("taken@example.com")
    work.clear()

    new = await register(client, "fresh@example.com")
    work_new = dict(work)
    work.clear()
    taken = await register(client, "TAKEN@example.com")  # another spelling of the address
    work_taken = dict(work)

    assert (new.status_code, taken.status_code) == (202, 202), (new.text, taken.text)
    assert new.json() == taken.json() == ACCEPTED
    assert new.headers.get("content-length") == taken.headers.get("content-length")
    assert work_new == work_taken == {"hash": 1}
    assert await row_count(services) == 2

    sent = mails(await delivered(services, capsys))
    assert [(to, subject) for to, subject, _ in sent] == [
        ("fresh@example.com", VERIFY_SUBJECT),
        (owner.email, ATTEMPT_SUBJECT),
    ]
    attempt_body = sent[1][2]
    assert "forgot" in attempt_body  # the hint: reset the password if it was you
    assert not re.search(r"\n\n\S{40,}\n", attempt_body)  # and no token
    # The new account, and the attempt on the taken one (a security event of its owner's).
    assert await audit_actions(services) == ["user.register", "user.register.taken"]


async def test_a_refused_password_is_refused_alike_before_any_lookup(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    work: Counter[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_user("taken@example.com")
    work.clear()
    answers = [
        await register(client, email, "short") for email in ("new@x.example", "taken@example.com")
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"]["code"] == "REGISTER_INVALID_PASSWORD"
    assert answers[0].json() == answers[1].json()
    assert work == {}  # no hash on either path
    assert mails(await delivered(services, capsys)) == []
    assert await row_count(services) == 1


async def test_registration_mails_the_verification_token_then_sign_in_works(
    client: httpx.AsyncClient, services: AppServices, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await register(client, "New.User@Example.com")).status_code == 202
    token = token_from_console(await delivered(services, capsys), "verify")
    verified = await client.post("/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["email"] == "New.User@example.com"
    assert verified.json()["is_verified"] is True
    signed_in = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "new.user@example.com", "password": PASSWORD},
    )
    assert signed_in.status_code == 200, signed_in.text
    assert await audit_actions(services) == [
        "user.register",
        "user.email.verify",
        "auth.login.success",
    ]
    async with services.sessionmaker() as db:
        [event] = (
            await db.scalars(select(AuditEvent).where(AuditEvent.action == "user.email.verify"))
        ).all()
        user = (await db.scalars(select(User))).one()
    assert (event.actor_id, event.target_id) == (user.id, str(user.id))
    assert event.client_ip == "203.0.113.10"


async def test_concurrent_registrations_of_one_address_all_answer_202_and_make_one_account(
    client: httpx.AsyncClient, services: AppServices, capsys: pytest.CaptureFixture[str]
) -> None:
    emails = ["race@example.com", "RACE@example.com", "Race@Example.com", "race@EXAMPLE.com"]
    answers = await asyncio.gather(*(register(client, e) for e in emails))
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert {a.text for a in answers} == {answers[0].text}
    assert await row_count(services) == 1
    sent = Counter(subject for _, subject, _ in mails(await delivered(services, capsys)))
    assert sent == {VERIFY_SUBJECT: 1, ATTEMPT_SUBJECT: 3}
    assert sorted(await audit_actions(services)) == ["user.register"] + ["user.register.taken"] * 3


async def test_an_inactive_owner_is_not_mailed(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_user("gone@example.com", is_active=False)
    answer = await register(client, "gone@example.com")
    assert (answer.status_code, answer.json()) == (202, ACCEPTED)
    assert mails(await delivered(services, capsys)) == []


class TestVerificationNotRequired:
    """``AUTHSVC_REQUIRE_VERIFIED_EMAIL=false``: today's answers, which reveal a taken address."""

    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"require_verified_email": False}

    async def test_201_with_the_user_and_400_for_a_taken_address(
        self,
        client: httpx.AsyncClient,
        services: AppServices,
        work: Counter[str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        created = await register(client, "open@example.com")
        assert created.status_code == 201, created.text
        assert created.json()["email"] == "open@example.com"
        assert created.json()["is_verified"] is False
        # The verification mail goes out here too.
        token_from_console(await delivered(services, capsys), "verify")
        taken = await register(client, "OPEN@example.com")
        assert taken.status_code == 400
        assert taken.json()["detail"]["code"] == "REGISTER_USER_ALREADY_EXISTS"
        assert work["hash"] == 1  # the taken path answers before hashing: it reveals itself
        assert await row_count(services) == 1
