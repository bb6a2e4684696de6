"""Issue 13's acceptance for the security trail: one account's life walks through every kind of
event the trail names, each lands with its actor, target, client IP, user agent and request id,
and the chain over all of them verifies intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from authsvc.db.models import AuditEvent
from authsvc.services import audit
from authsvc.services.container import AppServices
from tests.api.test_email_change import CONFIRM_SUBJECT, NOTICE_SUBJECT, mails, only
from tests.conftest import PASSWORD, delivered, token_from_console

EMAIL = "trail@example.com"
MOVED = "moved@example.com"
NEW_PASSWORD = "an entirely different passphrase"
AGENT = "trail-test/1.0"

# Every action of the security trail (services/audit.py) and the admin changes it also keeps.
EXPECTED = {
    audit.USER_REGISTERED,
    audit.EMAIL_VERIFIED,
    audit.LOGIN_SUCCEEDED,
    audit.LOGIN_FAILED,
    audit.LOGIN_THROTTLED,
    audit.THROTTLE_CLEARED,
    audit.REFRESH_REUSED,
    audit.SESSION_REVOKED,
    audit.PASSWORD_CHANGED,
    audit.PASSWORD_RESET,
    audit.EMAIL_CHANGE_REQUESTED,
    audit.EMAIL_CHANGED,
    audit.EMAIL_REVERTED,
    audit.TOKEN_REVOKED,
    audit.LOGOUT,
    audit.POLICY_RELOADED,
    "key.rotate",
    "client.create",
    "client.delete",
}


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {
        # A key store of this test's own (keys rotate), instead of the one-file test key.
        "data_dir": tmp_path,
        "signing_key_file": None,
        "login_throttle_threshold": 2,
        "refresh_reuse_grace_seconds": 0,  # a second use of a refresh token is an alarm at once
    }


def form(email: str, password: str, **extra: str) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": password, **extra}


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> dict[str, Any]:
    response = await client.post("/auth/token", data=form(email, password))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_every_security_event_is_recorded_with_its_context_and_the_chain_holds(
    client: httpx.AsyncClient,
    services: AppServices,
    admin_headers: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    client.headers["User-Agent"] = AGENT
    # Registration and verification.
    registered = await client.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
    assert registered.status_code == 202, registered.text
    verify = token_from_console(await delivered(services, capsys), "verify")
    assert (await client.post("/auth/verify", json={"token": verify})).status_code == 200

    # Sign-ins: a success, failures up to the throttle, an administrator's unlock.
    first = await sign_in(client, EMAIL, PASSWORD)
    for _ in range(2):
        failed = await client.post("/auth/token", data=form(EMAIL, "not the right password"))
        assert failed.status_code == 400, failed.text
    me = (await client.get("/users/me", headers=bearer(first))).json()
    unlocked = await client.delete(f"/users/{me['id']}/login-throttle", headers=admin_headers)
    assert unlocked.status_code == 204, unlocked.text

    # A refresh token used twice: the alarm.
    second = await sign_in(client, EMAIL, PASSWORD)
    refresh = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    assert (await client.post("/auth/token", data=refresh)).status_code == 200
    reused = await client.post("/auth/token", data=refresh)
    assert reused.status_code == 400 and reused.json()["detail"]["code"] == "REFRESH_TOKEN_REUSED"

    # Ending one of my sessions from another one.
    third = await sign_in(client, EMAIL, PASSWORD)
    first_sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    ended = await client.delete(f"/users/me/sessions/{first_sid}", headers=bearer(third))
    assert ended.status_code == 204, ended.text

    # A password change, then a reset back.
    changed = await client.patch(
        "/users/me",
        headers=bearer(third),
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    await delivered(services, capsys)  # nothing of interest; empties the notifier's output
    assert (await client.post("/auth/forgot-password", json={"email": EMAIL})).status_code == 202
    reset_token = token_from_console(await delivered(services, capsys), "reset-password")
    reset = await client.post(
        "/auth/reset-password", json={"token": reset_token, "password": PASSWORD}
    )
    assert reset.status_code == 200, reset.text

    # An email change: requested, confirmed from the new mailbox, undone from the old one.
    fourth = await sign_in(client, EMAIL, PASSWORD)
    requested = await client.patch(
        "/users/me", headers=bearer(fourth), json={"email": MOVED, "current_password": PASSWORD}
    )
    assert requested.status_code == 200, requested.text
    confirm = only(mails(await delivered(services, capsys)), MOVED, CONFIRM_SUBJECT)
    confirmed = await client.post("/auth/confirm-email", json={"token": confirm.token})
    assert confirmed.status_code == 200, confirmed.text
    notice = only(mails(await delivered(services, capsys)), EMAIL, NOTICE_SUBJECT)
    reverted = await client.post("/auth/revert-email", json={"token": notice.token})
    assert reverted.status_code == 204, reverted.text

    # Revocation (RFC 7009) and signing out.
    fifth = await sign_in(client, EMAIL, PASSWORD)
    revoked = await client.post("/auth/revoke", data={"token": fifth["refresh_token"]})
    assert revoked.status_code == 200, revoked.text
    sixth = await sign_in(client, EMAIL, PASSWORD)
    assert (await client.post("/auth/logout", headers=bearer(sixth))).status_code == 204

    # Administrators: a key rotation, a client registered and deleted, a policy reload.
    assert (await client.post("/keys/rotate", headers=admin_headers)).status_code == 201
    created = await client.post(
        "/clients", headers=admin_headers, json={"name": "reports", "permissions": []}
    )
    assert created.status_code == 201, created.text
    deleted = await client.delete(f"/clients/{created.json()['id']}", headers=admin_headers)
    assert deleted.status_code == 204, deleted.text
    reloaded = await client.post("/authz/policies/reload", headers=admin_headers)
    assert reloaded.status_code == 200, reloaded.text

    async with services.sessionmaker() as db:
        events = list((await db.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all())
    seen = {event.action for event in events}
    assert EXPECTED <= seen, f"missing: {sorted(EXPECTED - seen)}"
    for event in events:
        where = (event.action, event.target_type, event.target_id)
        # Each with its context: who asked from where, with what, in which request.
        assert event.client_ip == events[0].client_ip and event.client_ip, where
        assert event.request_id, where
        assert event.user_agent and event.user_agent.startswith(("trail-test", "python-httpx"))
        assert event.target_type and event.target_id, where
        # Never a password or a token.
        stored = repr((event.before, event.after, event.target_id, event.actor_email))
        for secret in (PASSWORD, NEW_PASSWORD, first["refresh_token"], first["access_token"]):
            assert secret not in stored, where
    actors = {event.action: event.actor_id for event in events}
    assert str(actors[audit.LOGIN_SUCCEEDED]) == me["id"]
    assert str(actors[audit.PASSWORD_CHANGED]) == me["id"]
    assert actors[audit.THROTTLE_CLEARED] not in (None, me["id"])  # the administrator

    verified = await client.get("/audit/verify", headers=admin_headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["intact"] is True
    assert verified.json()["events"] == len(events)
