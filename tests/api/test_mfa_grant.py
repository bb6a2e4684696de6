"""Issue 14: the MFA sign-in flow at the token endpoint. A password sign-in of an account with
a confirmed factor answers ``mfa_required`` with an ``mfa_token``; the MFA grant trades it and
a code for tokens whose ``amr`` says how the user signed in."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from authsvc.db.models import AuditEvent, MfaChallenge, TotpFactor, TrustedDevice
from authsvc.services import audit
from authsvc.services.container import AppServices
from tests.api.test_mfa_enrolment import (
    MFA_ACTIONS,
    FakeClock,
    assert_nothing_secret,
    enable,
    enrol,
    events,
)
from tests.api.test_oauth import basic, register_client
from tests.conftest import PASSWORD, Login, MakeUser

EMAIL = "second@example.com"
MFA_GRANT = "urn:authsvc:params:oauth:grant-type:mfa"
ROOMY = "100000/minute"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Twenty sign-ins at once must meet the second factor, not the per-IP login limit.
    return {"ratelimit_login_ip": ROOMY, "ratelimit_login_username": ROOMY}


@pytest.fixture
def clock(services: AppServices, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(services.mfa, "clock", fake)
    return fake


@pytest.fixture
async def enabled(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, clock: FakeClock
) -> tuple[str, list[str]]:
    """An account with a confirmed factor: its secret and recovery codes."""
    await make_user(EMAIL)
    return await enable(client, await login(EMAIL), clock)


async def password_step(
    client: httpx.AsyncClient, email: str = EMAIL, **extra: str
) -> httpx.Response:
    data = {"grant_type": "password", "username": email, "password": PASSWORD, **extra}
    return await client.post("/auth/token", data=data)


async def mfa_token(client: httpx.AsyncClient, **extra: str) -> str:
    response = await password_step(client, **extra)
    assert response.status_code == 400, response.text
    token: str = response.json()["mfa_token"]
    return token


async def mfa_step(
    client: httpx.AsyncClient, token: str, code: str, **extra: str
) -> httpx.Response:
    data = {"grant_type": MFA_GRANT, "mfa_token": token, "code": code, **extra}
    return await client.post("/auth/token", data=data)


def claims(body: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(body["access_token"], options={"verify_signature": False})
    return decoded


async def test_password_then_code_gives_tokens_with_amr(
    client: httpx.AsyncClient,
    enabled: tuple[str, list[str]],
    clock: FakeClock,
    services: AppServices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret, codes = enabled
    first = await password_step(client)
    assert first.status_code == 400, first.text
    body = first.json()
    assert body["error"] == "mfa_required"
    assert body["detail"]["code"] == "MFA_REQUIRED"
    assert "access_token" not in body and "refresh_token" not in body
    assert first.headers["cache-control"] == "no-store"

    second = await mfa_step(client, body["mfa_token"], clock.code(secret))
    assert second.status_code == 200, second.text
    tokens = second.json()
    assert tokens["refresh_token"] and tokens["device_token"]
    access = claims(tokens)
    assert access["amr"] == ["pwd", "otp", "mfa"]
    assert isinstance(access["auth_time"], int)

    me = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    # A refresh keeps how the session began.
    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert claims(refreshed.json())["amr"] == ["pwd", "otp", "mfa"]

    # The challenge is spent: the same token again is refused.
    clock.advance(30)
    again = await mfa_step(client, body["mfa_token"], clock.code(secret))
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"
    assert again.json()["detail"]["code"] == "MFA_TOKEN_INVALID"

    rows = await events(services, MFA_ACTIONS | {audit.LOGIN_SUCCEEDED, audit.LOGIN_FAILED})
    successes = [r for r in rows if r.action == audit.LOGIN_SUCCEEDED]
    # One for enable()'s own sign-in, one for this one: none at the password step.
    assert len(successes) == 2
    assert_nothing_secret(rows, secret, *codes, body["mfa_token"])
    # Nor in a log line (the audit events are logged too, with the keys of before/after).
    assert any(r.name == "authsvc.audit" for r in caplog.records)
    # (Not the six digits: any timestamp or number in a log line might contain them.)
    for value in (secret, *codes, body["mfa_token"]):
        assert value not in caplog.text


async def test_a_replayed_code_is_refused(
    client: httpx.AsyncClient, enabled: tuple[str, list[str]], clock: FakeClock
) -> None:
    secret, _ = enabled
    code = clock.code(secret)
    assert (await mfa_step(client, await mfa_token(client), code)).status_code == 200
    replay = await mfa_step(client, await mfa_token(client), code)
    assert replay.status_code == 400
    assert replay.json()["detail"]["code"] == "MFA_CODE_REJECTED"
    # The previous step's code is older than the one spent: refused too.
    older = await mfa_step(client, await mfa_token(client), clock.code(secret, -1))
    assert older.status_code == 400
    clock.advance(30)
    assert (await mfa_step(client, await mfa_token(client), clock.code(secret))).status_code == 200


async def test_a_recovery_code_works_once_and_says_so_in_amr(
    client: httpx.AsyncClient,
    enabled: tuple[str, list[str]],
    services: AppServices,
    login: Login,
) -> None:
    _, codes = enabled
    used = await mfa_step(client, await mfa_token(client), codes[0].upper().replace("-", " "))
    assert used.status_code == 200, used.text
    assert claims(used.json())["amr"] == ["pwd", "mfa"]
    again = await mfa_step(client, await mfa_token(client), codes[0])
    assert again.status_code == 400 and again.json()["detail"]["code"] == "MFA_CODE_REJECTED"
    headers = {"Authorization": f"Bearer {used.json()['access_token']}"}
    status = (await client.get("/users/me/mfa", headers=headers)).json()
    assert status["recovery_codes_remaining"] == 9
    rows = await events(services)
    assert [r.action for r in rows].count(audit.RECOVERY_CODE_USED) == 1
    assert_nothing_secret(rows, *codes)


async def test_twenty_concurrent_uses_of_one_recovery_code_pass_once(
    client: httpx.AsyncClient, enabled: tuple[str, list[str]]
) -> None:
    _, codes = enabled
    tokens = [await mfa_token(client) for _ in range(20)]
    answers = await asyncio.gather(*(mfa_step(client, t, codes[1]) for t in tokens))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 400, 429}, statuses


async def test_twenty_concurrent_uses_of_one_totp_code_pass_once(
    client: httpx.AsyncClient, enabled: tuple[str, list[str]], clock: FakeClock
) -> None:
    secret, _ = enabled
    tokens = [await mfa_token(client) for _ in range(20)]
    code = clock.code(secret)
    answers = await asyncio.gather(*(mfa_step(client, t, code) for t in tokens))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1, statuses


async def test_spent_forged_foreign_and_expired_mfa_tokens(
    client: httpx.AsyncClient,
    enabled: tuple[str, list[str]],
    clock: FakeClock,
    services: AppServices,
) -> None:
    secret, _ = enabled

    async def refused(token: str, **extra: str) -> None:
        response = await mfa_step(client, token, clock.code(secret), **extra)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant"
        assert response.json()["detail"]["code"] == "MFA_TOKEN_INVALID"

    token = await mfa_token(client)
    await refused(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))  # forged
    await refused("m1.not-a-challenge.x")
    await refused(token, client_id="another-client")  # bound to the client that asked
    clock.advance(services.settings.mfa_token_lifetime_seconds + 1)
    await refused(token)  # expired

    # At most five codes per challenge, right or wrong.
    clock.advance(30)
    token = await mfa_token(client)
    for _ in range(5):
        wrong = await mfa_step(client, token, "000000")
        assert wrong.json()["detail"]["code"] in {"MFA_CODE_REJECTED", "MFA_THROTTLED"}
    clock.advance(3600)
    await refused(token)
    async with services.sessionmaker() as db:
        attempts = (await db.execute(select(MfaChallenge.attempts))).scalars().all()
    assert max(attempts) == 5


@pytest.mark.parametrize("code", ["", "abcdef", "1" * 65, "12 34", "1234567"])
async def test_malformed_codes_are_a_clean_400_that_touches_nothing(
    client: httpx.AsyncClient,
    enabled: tuple[str, list[str]],
    clock: FakeClock,
    services: AppServices,
    code: str,
) -> None:
    secret, _ = enabled
    token = await mfa_token(client)
    response = await mfa_step(client, token, code)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["detail"]["code"] == "MFA_CODE_INVALID"
    async with services.sessionmaker() as db:
        assert (await db.execute(select(MfaChallenge.attempts))).scalar_one() == 0
        assert (await db.execute(select(TotpFactor.failures))).scalar_one() == 0
    assert (await mfa_step(client, token, clock.code(secret))).status_code == 200


async def test_wrong_codes_are_throttled_per_account(
    client: httpx.AsyncClient, enabled: tuple[str, list[str]], clock: FakeClock
) -> None:
    secret, _ = enabled
    for _ in range(5):
        wrong = await mfa_step(client, await mfa_token(client), clock.code(secret, 5))
        assert wrong.status_code == 400
    held = await mfa_step(client, await mfa_token(client), clock.code(secret))
    assert held.status_code == 429
    assert held.json()["error"] == "invalid_grant"
    assert held.json()["detail"]["code"] == "MFA_THROTTLED"
    assert held.headers["retry-after"] == "1"
    clock.advance(1)
    assert (await mfa_step(client, await mfa_token(client), clock.code(secret))).status_code == 200


async def test_a_pending_factor_does_not_block_sign_in(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user(EMAIL)
    await enrol(client, await login(EMAIL))
    response = await password_step(client)
    assert response.status_code == 200, response.text
    assert claims(response.json())["amr"] == ["pwd"]


async def test_a_wrong_password_says_nothing_of_the_second_factor(
    client: httpx.AsyncClient, enabled: tuple[str, list[str]], services: AppServices
) -> None:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": EMAIL, "password": "not the password"},
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "LOGIN_BAD_CREDENTIALS"
    assert "mfa_token" not in response.json()
    async with services.sessionmaker() as db:
        assert not (await db.execute(select(MfaChallenge.id))).scalars().all()


async def test_the_device_token_comes_only_after_the_second_factor(
    client: httpx.AsyncClient,
    enabled: tuple[str, list[str]],
    clock: FakeClock,
    services: AppServices,
) -> None:
    secret, _ = enabled
    async with services.sessionmaker() as db:
        before = len((await db.execute(select(TrustedDevice.id))).scalars().all())
    token = await mfa_token(client)
    async with services.sessionmaker() as db:
        assert len((await db.execute(select(TrustedDevice.id))).scalars().all()) == before
    first = (await mfa_step(client, token, clock.code(secret))).json()
    device = first["device_token"]
    # The device token presented with the password travels with the challenge: the same
    # device is trusted again (no new row), and gets a renewed token.
    clock.advance(30)
    token = await mfa_token(client, device_token=device)
    second = await mfa_step(client, token, clock.code(secret))
    assert second.status_code == 200 and second.json()["device_token"]
    async with services.sessionmaker() as db:
        assert len((await db.execute(select(TrustedDevice.id))).scalars().all()) == before + 1


async def test_an_mfa_token_is_no_bearer_token(
    client: httpx.AsyncClient,
    enabled: tuple[str, list[str]],
    admin_headers: dict[str, str],
) -> None:
    token = await mfa_token(client)
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401 and me.json()["detail"]["code"] == "TOKEN_INVALID"
    mine = await client.get("/users/me/mfa", headers={"Authorization": f"Bearer {token}"})
    assert mine.status_code == 401
    created = await register_client(client, admin_headers)
    introspected = await client.post(
        "/auth/introspect",
        data={"token": token},
        headers=basic(created["id"], created["client_secret"]),
    )
    assert introspected.status_code == 200 and introspected.json() == {"active": False}


async def test_discovery_lists_the_mfa_grant(client: httpx.AsyncClient) -> None:
    document = (await client.get("/.well-known/openid-configuration")).json()
    assert MFA_GRANT in document["grant_types_supported"]


async def test_an_inactive_account_cannot_finish(
    client: httpx.AsyncClient,
    enabled: tuple[str, list[str]],
    clock: FakeClock,
    services: AppServices,
) -> None:
    secret, _ = enabled
    token = await mfa_token(client)
    from authsvc.db.models import User

    async with services.sessionmaker() as db:
        await db.execute(update(User).where(User.email == EMAIL).values(is_active=False))
        await db.commit()
    response = await mfa_step(client, token, clock.code(secret))
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "MFA_TOKEN_INVALID"
    assert AuditEvent  # imported for the trail helpers
