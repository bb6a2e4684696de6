"""Changing the email address: current password; the owner's change pending until a link sent to
the new address confirms it, then other sessions ended and a notice to the old address with a
way to undo; an administrator's change immediate; audit trail (issue 11 item 5, issue 13)."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi_users.jwt import generate_jwt
from sqlalchemy import select

from authsvc.db.models import AuditEvent, Session, User
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, TOKEN_SECRET, MakeUser, delivered, token_from_console

OLD = "owner@example.com"
NEW = "owner.new@example.com"
ATTACKER = "attacker@evil.example"

NOTICE_SUBJECT = "Your email address was changed"
VERIFY_SUBJECT = "Verify your email address"
RESET_SUBJECT = "Reset your password"
CONFIRM_SUBJECT = "Confirm your new email address"


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str

    @property
    def token(self) -> str | None:
        match = re.search(r":\n\n(\S+)\n", self.body + "\n")
        return match.group(1) if match else None


def mails(output: str) -> list[Mail]:
    """The messages the console notifier printed."""
    found = re.findall(r"--- mail to (\S+): (.*?) ---\n(.*?)\n---\n", output, re.S)
    return [Mail(to, subject, body) for to, subject, body in found]


def only(found: list[Mail], to: str, subject: str) -> Mail:
    matching = [m for m in found if m.to == to and m.subject == subject]
    assert len(matching) == 1, (to, subject, found)
    return matching[0]


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    response = await client.post(
        "/auth/token", data={"grant_type": "password", "username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def refresh(client: httpx.AsyncClient, tokens: dict[str, Any]) -> httpx.Response:
    return await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )


async def me(client: httpx.AsyncClient, tokens: dict[str, Any]) -> httpx.Response:
    return await client.get("/users/me", headers=bearer(tokens))


async def audit_rows(services: AppServices, user_id: uuid.UUID, action: str) -> list[AuditEvent]:
    async with services.sessionmaker() as db:
        query = select(AuditEvent).where(
            AuditEvent.target_id == str(user_id), AuditEvent.action == action
        )
        return list((await db.scalars(query)).all())


async def stored_email(services: AppServices, user_id: uuid.UUID) -> tuple[str, bool]:
    async with services.sessionmaker() as db:
        user = await db.get(User, user_id)
        assert user is not None
        return user.email, user.is_verified


async def change_email(
    client: httpx.AsyncClient, tokens: dict[str, Any], email: str = NEW, **extra: Any
) -> httpx.Response:
    return await client.patch("/users/me", headers=bearer(tokens), json={"email": email, **extra})


async def test_changing_the_email_needs_the_current_password(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    for extra in ({}, {"current_password": "not my password"}, {"current_password": ""}):
        response = await change_email(client, tokens, **extra)
        assert response.status_code == 401, (extra, response.text)
        assert response.json()["detail"]["code"] == "CURRENT_PASSWORD_INVALID"
    assert await stored_email(services, user.id) == (OLD, True)
    assert mails(await delivered(services, capsys)) == []
    assert await audit_rows(services, user.id, "user.email.change") == []
    assert (await me(client, tokens)).status_code == 200


async def confirm(client: httpx.AsyncClient, token: str | None) -> httpx.Response:
    return await client.post("/auth/confirm-email", json={"token": token})


async def move(
    client: httpx.AsyncClient,
    tokens: dict[str, Any],
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
    email: str = NEW,
) -> Mail:
    """Request the change and confirm it from the new mailbox; the notice to the old address."""
    requested = await change_email(client, tokens, email, current_password=PASSWORD)
    assert requested.status_code == 200, requested.text
    link = only(mails(await delivered(services, capsys)), email, CONFIRM_SUBJECT)
    confirmed = await confirm(client, link.token)
    assert confirmed.status_code == 200, confirmed.text
    sent = mails(await delivered(services, capsys))
    return only(sent, requested.json()["email"], NOTICE_SUBJECT)


async def test_email_change_waits_for_the_new_address_then_switches_ends_other_sessions(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    mine = await sign_in(client, OLD)
    other = await sign_in(client, OLD)

    # 1. The request: nothing changes but pending_email; a link goes to the new address only.
    response = await change_email(client, mine, current_password=PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["email"], body["pending_email"], body["is_verified"]) == (OLD, NEW, True)
    assert (await me(client, other)).json()["pending_email"] == NEW
    assert await stored_email(services, user.id) == (OLD, True)
    [link] = mails(await delivered(services, capsys))
    assert (link.to, link.subject) == (NEW, CONFIRM_SUBJECT)
    assert (await me(client, other)).status_code == 200  # no session ended yet
    await sign_in(client, OLD)
    [requested] = await audit_rows(services, user.id, "user.email.change_request")
    assert requested.actor_id == user.id
    assert requested.after == {"email": OLD, "pending_email": NEW}
    assert requested.client_ip == "203.0.113.10"
    assert await audit_rows(services, user.id, "user.email.change") == []

    # 2. The confirmation: the address switches, verified (the link reached it).
    confirmed = await confirm(client, link.token)
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["email"], confirmed.json()["is_verified"]) == (NEW, True)
    assert await stored_email(services, user.id) == (NEW, True)
    assert (await me(client, mine)).json()["pending_email"] is None

    [notice] = mails(await delivered(services, capsys))
    assert (notice.to, notice.subject) == (OLD, NOTICE_SUBJECT)
    assert notice.token is not None and notice.token != link.token
    assert NEW not in notice.body  # the old mailbox is not told where the account went

    # Every other session ended: its access token and its refresh token are refused.
    assert (await me(client, other)).status_code == 401
    assert (await refresh(client, other)).json()["error"] == "invalid_grant"
    # The session that asked for the change goes on.
    assert (await me(client, mine)).json()["email"] == NEW
    assert (await refresh(client, mine)).status_code == 200
    async with services.sessionmaker() as db:
        ended = [
            s.revoked_reason
            for s in (await db.scalars(select(Session).where(Session.user_id == user.id))).all()
        ]
    assert sorted(map(str, ended)) == ["None", "email-changed", "email-changed"]

    # The old address no longer signs in; the new one does.
    refused = await client.post(
        "/auth/token", data={"grant_type": "password", "username": OLD, "password": PASSWORD}
    )
    assert refused.status_code == 400
    await sign_in(client, NEW)

    [event] = await audit_rows(services, user.id, "user.email.change")
    assert event.actor_id == user.id
    assert event.target_type == "user"
    assert event.before == {"email": OLD}
    assert event.after == {"email": NEW}
    assert event.client_ip == "203.0.113.10"

    # A link works once.
    again = await confirm(client, link.token)
    assert again.status_code == 400
    assert again.json()["detail"]["code"] == "CONFIRM_EMAIL_BAD_TOKEN"


async def test_a_newer_request_kills_the_older_link(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    requests = [NEW, "second@example.com", NEW]  # the same address again gets a new link too
    links = []
    for email in requests:
        asked = await change_email(client, tokens, email, current_password=PASSWORD)
        assert asked.status_code == 200, asked.text
        links.append(only(mails(await delivered(services, capsys)), email, CONFIRM_SUBJECT))
    for stale in links[:2]:
        refused = await confirm(client, stale.token)
        assert refused.status_code == 400, refused.text
        assert refused.json()["detail"]["code"] == "CONFIRM_EMAIL_BAD_TOKEN"
    assert await stored_email(services, user.id) == (OLD, True)
    assert (await confirm(client, links[2].token)).status_code == 200
    assert await stored_email(services, user.id) == (NEW, True)


@pytest.mark.parametrize("how", ["reset", "change"])
async def test_a_new_password_kills_a_pending_change(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    """Someone who learnt the password asks to move the account to their own mailbox; the owner
    notices and sets a new password. The link in the other mailbox must die with the old
    password, or it would still hand the account over."""
    user = await make_user(OLD)
    attacker = await sign_in(client, OLD)
    asked = await change_email(client, attacker, NEW, current_password=PASSWORD)
    assert asked.status_code == 200, asked.text
    link = only(mails(await delivered(services, capsys)), NEW, CONFIRM_SUBJECT)

    fresh = "the owner's fresh passphrase"
    if how == "reset":
        assert (await client.post("/auth/forgot-password", json={"email": OLD})).status_code == 202
        token = token_from_console(await delivered(services, capsys), "reset-password")
        reset = await client.post("/auth/reset-password", json={"token": token, "password": fresh})
        assert reset.status_code == 200, reset.text
    else:
        owner = await sign_in(client, OLD)
        changed = await client.patch(
            "/users/me",
            headers=bearer(owner),
            json={"password": fresh, "current_password": PASSWORD},
        )
        assert changed.status_code == 200, changed.text

    refused = await confirm(client, link.token)
    assert refused.status_code == 400, refused.text
    assert refused.json()["detail"]["code"] == "CONFIRM_EMAIL_BAD_TOKEN"
    assert await stored_email(services, user.id) == (OLD, True)
    async with services.sessionmaker() as db:
        stored = await db.get(User, user.id)
        assert stored is not None and stored.pending_email is None


async def test_asking_for_the_current_address_withdraws_the_pending_change(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    assert (await change_email(client, tokens, current_password=PASSWORD)).status_code == 200
    link = only(mails(await delivered(services, capsys)), NEW, CONFIRM_SUBJECT)
    withdrawn = await change_email(client, tokens, OLD)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["pending_email"] is None
    assert (await confirm(client, link.token)).status_code == 400
    assert await stored_email(services, user.id) == (OLD, True)


async def test_confirming_an_address_another_account_took_meanwhile_is_a_conflict(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    assert (await change_email(client, tokens, current_password=PASSWORD)).status_code == 200
    link = only(mails(await delivered(services, capsys)), NEW, CONFIRM_SUBJECT)
    await make_user(NEW.upper())
    refused = await confirm(client, link.token)
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"]["code"] == "CONFIRM_EMAIL_ADDRESS_TAKEN"
    assert await stored_email(services, user.id) == (OLD, True)
    assert (await me(client, tokens)).status_code == 200  # nothing changed, nothing ended
    assert mails(await delivered(services, capsys)) == []
    assert await audit_rows(services, user.id, "user.email.change") == []


async def test_requesting_an_address_another_account_uses_is_refused(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    await make_user(NEW)
    tokens = await sign_in(client, OLD)
    refused = await change_email(client, tokens, current_password=PASSWORD)
    assert refused.status_code == 400
    assert refused.json()["detail"]["code"] == "UPDATE_USER_EMAIL_ALREADY_EXISTS"
    assert (await me(client, tokens)).json()["pending_email"] is None
    assert mails(await delivered(services, capsys)) == []
    assert await audit_rows(services, user.id, "user.email.change_request") == []


async def test_concurrent_confirmations_with_one_link_succeed_once(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    assert (await change_email(client, tokens, current_password=PASSWORD)).status_code == 200
    link = only(mails(await delivered(services, capsys)), NEW, CONFIRM_SUBJECT)
    answers = await asyncio.gather(*(confirm(client, link.token) for _ in range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 7, [a.text for a in answers]
    assert len(await audit_rows(services, user.id, "user.email.change")) == 1
    assert [m.to for m in mails(await delivered(services, capsys))] == [OLD]


async def test_bad_confirmation_tokens_are_refused_cleanly(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    await make_user(OLD)
    tokens = await sign_in(client, OLD)
    for bad in ("", "garbage", "a.b.c", tokens["access_token"], "x" * 4096):
        refused = await confirm(client, bad)
        assert refused.status_code == 400, bad
        assert refused.json()["detail"]["code"] == "CONFIRM_EMAIL_BAD_TOKEN"
    assert (await confirm(client, "x" * 4097)).status_code == 422
    assert (await client.post("/auth/confirm-email", json={})).status_code == 422


async def test_expired_and_forged_confirmation_tokens_are_refused(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    assert (await change_email(client, tokens, current_password=PASSWORD)).status_code == 200
    link = only(mails(await delivered(services, capsys)), NEW, CONFIRM_SUBJECT)
    claims = jwt.decode(str(link.token), options={"verify_signature": False})
    claims.pop("exp")
    expired = generate_jwt(claims, TOKEN_SECRET, -60)
    forged = generate_jwt(claims, "not-the-secret-" + "y" * 32, 600)
    mismatched = generate_jwt({**claims, "email": ATTACKER}, TOKEN_SECRET, 600)  # not pending
    for bad in (expired, forged, mismatched):
        refused = await confirm(client, bad)
        assert refused.status_code == 400, refused.text
        assert refused.json()["detail"]["code"] == "CONFIRM_EMAIL_BAD_TOKEN"
    assert await stored_email(services, user.id) == (OLD, True)
    assert (await confirm(client, link.token)).status_code == 200


# These sign in again after the change unverified the account.
@pytest.mark.parametrize("settings_overrides", [{"require_verified_email": False}])
async def test_revert_restores_the_old_address_and_ends_every_session(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    mine = await sign_in(client, OLD)
    notice = await move(client, mine, services, capsys)
    later = await sign_in(client, NEW)
    assert notice.token is not None

    # Not an access token, and no other kind of token passes as it.
    as_access = await client.get("/users/me", headers={"Authorization": f"Bearer {notice.token}"})
    assert as_access.status_code == 401
    for bad in ("", "garbage", "a.b.c", mine["access_token"]):
        refused = await client.post("/auth/revert-email", json={"token": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["detail"]["code"] == "REVERT_EMAIL_BAD_TOKEN"

    reverted = await client.post("/auth/revert-email", json={"token": notice.token})
    assert reverted.status_code == 204, reverted.text
    assert await stored_email(services, user.id) == (OLD, True)
    for tokens in (mine, later):
        assert (await me(client, tokens)).status_code == 401
        assert (await refresh(client, tokens)).json()["error"] == "invalid_grant"
    await sign_in(client, OLD)

    again = await client.post("/auth/revert-email", json={"token": notice.token})
    assert again.status_code == 400
    assert again.json()["detail"]["code"] == "REVERT_EMAIL_BAD_TOKEN"
    assert await stored_email(services, user.id) == (OLD, True)

    [event] = await audit_rows(services, user.id, "user.email.revert")
    assert event.actor_id == user.id
    assert event.before == {"email": NEW}
    assert event.after is not None and event.after["email"] == OLD


async def test_a_revert_token_dies_with_its_change(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bound to the change: after a revert and the same change again, only the new token works."""
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    first = (await move(client, tokens, services, capsys)).token
    assert (await client.post("/auth/revert-email", json={"token": first})).status_code == 204

    tokens = await sign_in(client, OLD)
    second = (await move(client, tokens, services, capsys)).token
    assert second != first
    stale = await client.post("/auth/revert-email", json={"token": first})
    assert stale.status_code == 400
    assert stale.json()["detail"]["code"] == "REVERT_EMAIL_BAD_TOKEN"
    assert await stored_email(services, user.id) == (NEW, True)
    assert (await client.post("/auth/revert-email", json={"token": second})).status_code == 204
    assert await stored_email(services, user.id) == (OLD, True)


async def test_concurrent_reverts_with_one_token_succeed_once(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    token = (await move(client, tokens, services, capsys)).token
    answers = await asyncio.gather(
        *(client.post("/auth/revert-email", json={"token": token}) for _ in range(10))
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [204] + [400] * 9, [a.text for a in answers]
    assert len(await audit_rows(services, user.id, "user.email.revert")) == 1


async def test_stolen_access_token_cannot_take_the_account_over(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The attacker holds only the victim's access token (no password, no mailbox)."""
    victim = await make_user(OLD)
    stolen = await sign_in(client, OLD)

    # 1. Point the account at an address the attacker owns: refused without the password.
    for extra in ({}, {"current_password": "guess"}):
        taken = await change_email(client, stolen, ATTACKER, **extra)
        assert taken.status_code == 401
        assert taken.json()["detail"]["code"] == "CURRENT_PASSWORD_INVALID"
    # Nor through the admin route on oneself (the own-profile policy allows the request).
    own = await client.patch(
        f"/users/{victim.id}", headers=bearer(stolen), json={"email": ATTACKER}
    )
    assert own.status_code == 401
    assert own.json()["detail"]["code"] == "CURRENT_PASSWORD_INVALID"
    assert await stored_email(services, victim.id) == (OLD, True)

    # 2. So a password reset for the attacker's address reaches nobody, and one for the
    # account's address reaches the victim only.
    for email in (ATTACKER, OLD):
        assert (
            await client.post("/auth/forgot-password", json={"email": email})
        ).status_code == 202
    sent = mails(await delivered(services, capsys))
    assert [m.to for m in sent] == [OLD]
    assert sent[0].subject == RESET_SUBJECT

    # 3. Nothing changed, nothing to audit, and the victim still signs in.
    assert await audit_rows(services, victim.id, "user.email.change") == []
    await sign_in(client, OLD)


async def test_admin_email_change_unverifies_notifies_and_ends_sessions(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    admin_headers: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``PATCH /users/{id}`` by an administrator: no current password (theirs or the user's),
    the same consequences, but no revert token (an administrator's change stands; the old
    mailbox may be exactly what the administrator is moving the account away from)."""
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    capsys.readouterr()
    response = await client.patch(f"/users/{user.id}", headers=admin_headers, json={"email": NEW})
    assert response.status_code == 200, response.text
    assert response.json()["is_verified"] is False
    sent = mails(await delivered(services, capsys))
    only(sent, NEW, VERIFY_SUBJECT)
    notice = only(sent, OLD, NOTICE_SUBJECT)
    assert notice.token is None
    assert "administrator" in notice.body
    assert (await me(client, tokens)).status_code == 401
    assert (await refresh(client, tokens)).json()["error"] == "invalid_grant"
    assert (await client.get("/users/me", headers=admin_headers)).status_code == 200
    [event] = await audit_rows(services, user.id, "user.email.change")
    assert event.actor_email == "admin@example.com"
    assert (event.before, event.after) == ({"email": OLD}, {"email": NEW})


async def test_revert_confirm_verify_and_reset_tokens_do_not_pass_for_one_another(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    admin_headers: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    assert (await change_email(client, tokens, current_password=PASSWORD)).status_code == 200
    link = only(mails(await delivered(services, capsys)), NEW, CONFIRM_SUBJECT).token
    revert = (await move(client, tokens, services, capsys, "third@example.com")).token
    later = await change_email(client, tokens, NEW, current_password=PASSWORD)
    assert later.status_code == 200
    link = only(mails(await delivered(services, capsys)), NEW, CONFIRM_SUBJECT).token
    await client.patch(f"/users/{user.id}", headers=admin_headers, json={"is_verified": False})
    assert (
        await client.post("/auth/request-verify-token", json={"email": "third@example.com"})
    ).status_code == 202
    assert (
        await client.post("/auth/forgot-password", json={"email": "third@example.com"})
    ).status_code == 202
    sent = mails(await delivered(services, capsys))
    verify = only(sent, "third@example.com", VERIFY_SUBJECT).token
    reset = only(sent, "third@example.com", RESET_SUBJECT).token
    kinds = {"revert": revert, "confirm": link, "verify": verify, "reset": reset}
    routes = {
        "revert": ("/auth/revert-email", {}),
        "confirm": ("/auth/confirm-email", {}),
        "verify": ("/auth/verify", {}),
        "reset": ("/auth/reset-password", {"password": "a brand new passphrase"}),
    }
    for kind, token in kinds.items():
        for route, (path, extra) in routes.items():
            if route == kind:
                continue
            refused = await client.post(path, json={"token": token, **extra})
            assert refused.status_code == 400, (kind, route, refused.text)
    assert await stored_email(services, user.id) == ("third@example.com", False)


async def test_revert_when_the_old_address_was_taken_meanwhile(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = await make_user(OLD)
    tokens = await sign_in(client, OLD)
    revert = (await move(client, tokens, services, capsys)).token
    await make_user(OLD)
    refused = await client.post("/auth/revert-email", json={"token": revert})
    assert refused.status_code == 409
    assert refused.json()["detail"]["code"] == "REVERT_EMAIL_ADDRESS_TAKEN"
    assert await stored_email(services, user.id) == (NEW, True)
    assert (await me(client, tokens)).status_code == 200  # nothing changed, nothing ended
