"""Issue 14: a user's own TOTP factor and recovery codes (``/users/me/mfa``). Codes come from
the independent reference in tests/unit/test_totp.py; time is the MFA clock, never a sleep."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from authsvc.db.models import AuditEvent, RecoveryCode, TotpFactor
from authsvc.services import audit
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser
from tests.unit.test_totp import reference_totp

EMAIL = "mfa@example.com"
MFA_ACTIONS = {
    audit.MFA_ENROLL_STARTED,
    audit.MFA_ENABLED,
    audit.MFA_REMOVED,
    audit.MFA_FAILED,
    audit.RECOVERY_CODE_USED,
    audit.RECOVERY_CODES_REGENERATED,
}


class FakeClock:
    """Starts 10 s into a 30-second step near the real time (database times stay sensible)."""

    def __init__(self) -> None:
        real = int(datetime.now(UTC).timestamp())
        self.now = datetime.fromtimestamp(real - real % 30 + 10, UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def code(self, secret: str, offset_steps: int = 0) -> str:
        return reference_totp(secret, int(self.now.timestamp()) + 30 * offset_steps)


@pytest.fixture
def clock(services: AppServices, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(services.mfa, "clock", fake)
    return fake


async def enrol(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/users/me/mfa/totp", headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def enable(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock
) -> tuple[str, list[str]]:
    """Enrol and confirm; the secret and the recovery codes. Moves the clock a step on, so
    the confirming code's step is spent and the next code is fresh."""
    secret = (await enrol(client, headers))["secret"]
    response = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": clock.code(secret)}, headers=headers
    )
    assert response.status_code == 200, response.text
    clock.advance(30)
    return secret, response.json()["recovery_codes"]


async def events(services: AppServices, actions: set[str] = MFA_ACTIONS) -> list[AuditEvent]:
    async with services.sessionmaker() as db:
        query = select(AuditEvent).where(AuditEvent.action.in_(actions))
        return list((await db.execute(query.order_by(AuditEvent.seq))).scalars())


def assert_nothing_secret(rows: list[AuditEvent], *secrets: str) -> None:
    for row in rows:
        text = repr((row.before, row.after, row.target_id))
        for secret in secrets:
            assert secret not in text and secret.replace("-", "") not in text


@pytest.fixture
async def headers(make_user: MakeUser, login: Login) -> dict[str, str]:
    await make_user(EMAIL)
    return await login(EMAIL)


async def test_enrol_confirm_and_status(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock, services: AppServices
) -> None:
    status = await client.get("/users/me/mfa", headers=headers)
    assert status.json() == {"totp": "none", "confirmed_at": None, "recovery_codes_remaining": 0}

    started = await client.post("/users/me/mfa/totp", headers=headers)
    assert started.status_code == 201
    assert started.headers["cache-control"] == "no-store"
    body = started.json()
    uri = urlsplit(body["otpauth_uri"])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert parse_qs(uri.query)["secret"] == [body["secret"]]
    assert parse_qs(uri.query)["issuer"] == ["authsvc"]
    assert body["qr_svg"].startswith("<svg") and "<script" not in body["qr_svg"]
    assert (await client.get("/users/me/mfa", headers=headers)).json()["totp"] == "pending"

    # Stored sealed, never in the clear.
    async with services.sessionmaker() as db:
        stored = (await db.execute(select(TotpFactor.secret))).scalar_one()
    assert body["secret"] not in stored

    confirmed = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": clock.code(body["secret"])}, headers=headers
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.headers["cache-control"] == "no-store"
    codes = confirmed.json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    status = (await client.get("/users/me/mfa", headers=headers)).json()
    assert status["totp"] == "enabled" and status["recovery_codes_remaining"] == 10
    async with services.sessionmaker() as db:
        hashes = list((await db.execute(select(RecoveryCode.code_hash))).scalars())
    assert len(hashes) == 10 and not set(hashes) & {c.replace("-", "") for c in codes}

    rows = await events(services)
    assert [r.action for r in rows] == [audit.MFA_ENROLL_STARTED, audit.MFA_ENABLED]
    assert_nothing_secret(rows, body["secret"], *codes)


async def test_confirming_twice_and_enrolling_over_an_enabled_factor_are_conflicts(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock
) -> None:
    nothing = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": "123456"}, headers=headers
    )
    assert nothing.status_code == 409 and nothing.json()["detail"]["code"] == "MFA_NOT_PENDING"
    secret, _ = await enable(client, headers, clock)
    again = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": clock.code(secret)}, headers=headers
    )
    assert again.status_code == 409 and again.json()["detail"]["code"] == "MFA_NOT_PENDING"
    over = await client.post("/users/me/mfa/totp", headers=headers)
    assert over.status_code == 409 and over.json()["detail"]["code"] == "MFA_ALREADY_ENROLLED"


async def test_starting_again_replaces_a_pending_enrolment(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock
) -> None:
    first = (await enrol(client, headers))["secret"]
    second = (await enrol(client, headers))["secret"]
    assert first != second
    old = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": clock.code(first)}, headers=headers
    )
    assert old.status_code == 400 and old.json()["detail"]["code"] == "MFA_CODE_REJECTED"
    new = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": clock.code(second)}, headers=headers
    )
    assert new.status_code == 200


@pytest.mark.parametrize("code", ["", "12345a", "1" * 65, "abc", "12345", "1234567", "١٢٣٤٥٦"])
async def test_malformed_codes_are_a_clean_400_that_touches_nothing(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    clock: FakeClock,
    services: AppServices,
    code: str,
) -> None:
    secret = (await enrol(client, headers))["secret"]
    response = await client.post("/users/me/mfa/totp/confirm", json={"code": code}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["detail"]["code"] == "MFA_CODE_INVALID"
    async with services.sessionmaker() as db:
        failures = (await db.execute(select(TotpFactor.failures))).scalar_one()
    assert failures == 0
    assert [r.action for r in await events(services)] == [audit.MFA_ENROLL_STARTED]
    ok = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": clock.code(secret)}, headers=headers
    )
    assert ok.status_code == 200


async def test_regenerating_recovery_codes_needs_a_code_and_kills_the_old_set(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock, services: AppServices
) -> None:
    secret, old_codes = await enable(client, headers, clock)
    recovery = await client.post(
        "/users/me/mfa/recovery-codes", json={"code": old_codes[0]}, headers=headers
    )
    assert recovery.status_code == 400 and recovery.json()["detail"]["code"] == "MFA_CODE_INVALID"
    response = await client.post(
        "/users/me/mfa/recovery-codes", json={"code": clock.code(secret)}, headers=headers
    )
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    new_codes = response.json()["recovery_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(old_codes)
    async with services.sessionmaker() as db:
        assert len(list((await db.execute(select(RecoveryCode.id))).scalars())) == 10
    # The same code again (same step): a replay.
    replay = await client.post(
        "/users/me/mfa/recovery-codes", json={"code": clock.code(secret)}, headers=headers
    )
    assert replay.status_code == 400 and replay.json()["detail"]["code"] == "MFA_CODE_REJECTED"
    rows = await events(services)
    assert audit.RECOVERY_CODES_REGENERATED in [r.action for r in rows]
    assert_nothing_secret(rows, secret, *old_codes, *new_codes)


async def test_remove_with_a_code_or_with_password_and_recovery_code(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock, services: AppServices
) -> None:
    secret, codes = await enable(client, headers, clock)
    wrong = await client.request(
        "DELETE", "/users/me/mfa/totp", json={"code": clock.code(secret, -5)}, headers=headers
    )
    assert wrong.status_code == 400 and wrong.json()["detail"]["code"] == "MFA_CODE_REJECTED"
    bad_password = await client.request(
        "DELETE",
        "/users/me/mfa/totp",
        json={"password": "not the password", "recovery_code": codes[0]},
        headers=headers,
    )
    assert bad_password.status_code == 400
    removed = await client.request(
        "DELETE", "/users/me/mfa/totp", json={"code": clock.code(secret)}, headers=headers
    )
    assert removed.status_code == 204
    assert (await client.get("/users/me/mfa", headers=headers)).json()["totp"] == "none"
    async with services.sessionmaker() as db:
        assert not list((await db.execute(select(RecoveryCode.id))).scalars())

    secret, codes = await enable(client, headers, clock)
    removed = await client.request(
        "DELETE",
        "/users/me/mfa/totp",
        json={"password": PASSWORD, "recovery_code": codes[3].upper()},
        headers=headers,
    )
    assert removed.status_code == 204, removed.text
    gone = await client.request("DELETE", "/users/me/mfa/totp", json={}, headers=headers)
    assert gone.status_code == 404 and gone.json()["detail"]["code"] == "MFA_NOT_ENROLLED"
    rows = await events(services)
    assert [r.action for r in rows].count(audit.MFA_REMOVED) == 2
    assert_nothing_secret(rows, secret, *codes, PASSWORD)


async def test_a_pending_enrolment_is_removed_without_proof(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock
) -> None:
    await enrol(client, headers)
    removed = await client.request("DELETE", "/users/me/mfa/totp", json={}, headers=headers)
    assert removed.status_code == 204


async def test_wrong_codes_are_throttled_with_a_doubling_delay(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock, services: AppServices
) -> None:
    secret, _ = await enable(client, headers, clock)

    async def regenerate(code: str) -> httpx.Response:
        return await client.post(
            "/users/me/mfa/recovery-codes", json={"code": code}, headers=headers
        )

    wrong = clock.code(secret, 5)
    for _ in range(5):
        assert (await regenerate(wrong)).status_code == 400
    held = await regenerate(clock.code(secret))
    assert held.status_code == 429, held.text
    assert held.json()["detail"]["code"] == "MFA_THROTTLED"
    assert held.headers["retry-after"] == "1"
    clock.advance(1)
    assert (await regenerate(wrong)).status_code == 400  # the sixth failure: 2 s now
    held = await regenerate(clock.code(secret))
    assert held.status_code == 429 and held.headers["retry-after"] == "2"
    clock.advance(2)
    assert (await regenerate(clock.code(secret))).status_code == 200  # success resets
    clock.advance(30)
    assert (await regenerate(wrong)).status_code == 400
    async with services.sessionmaker() as db:
        assert (await db.execute(select(TotpFactor.failures))).scalar_one() == 1
    failures = [r for r in await events(services) if r.action == audit.MFA_FAILED]
    assert len(failures) == 7
    assert failures[0].after == {"reason": "wrong_code", "kind": "otp", "failures": 1}


async def test_routes_need_a_signed_in_user(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/users/me/mfa"),
        ("POST", "/users/me/mfa/totp"),
        ("POST", "/users/me/mfa/totp/confirm"),
        ("DELETE", "/users/me/mfa/totp"),
        ("POST", "/users/me/mfa/recovery-codes"),
    ]:
        response = await client.request(method, path, json={"code": "123456"})
        assert response.status_code == 401, (method, path)


async def test_a_factor_is_bound_to_its_account(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    clock: FakeClock,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
) -> None:
    """A sealed secret copied onto another account opens no more (AES-GCM associated data)."""
    await enable(client, headers, clock)
    other = await make_user("other@example.com")
    other_headers = await login("other@example.com")
    await enrol(client, other_headers)
    async with services.sessionmaker() as db:
        mine = (
            await db.execute(select(TotpFactor.secret).where(TotpFactor.user_id != other.id))
        ).scalar_one()
        row = await db.get(TotpFactor, other.id)
        assert row is not None
        row.secret = mine
        await db.commit()
    response = await client.post(
        "/users/me/mfa/totp/confirm", json={"code": "123456"}, headers=other_headers
    )
    assert response.status_code == 409
    assert response.json()["detail"]["code"] == "MFA_FACTOR_UNREADABLE"
    assert uuid.UUID(str(other.id))


async def test_a_second_factor_lowers_the_password_minimum_to_eight(
    client: httpx.AsyncClient, headers: dict[str, str], clock: FakeClock
) -> None:
    """NIST SP 800-63B-4 §3.1.1.2: 15 characters for a password that is the only factor, 8
    once the account has a second one (AUTHSVC_PASSWORD_MIN_LENGTH_WITH_MFA)."""
    short = "eight or so"  # 11 characters, on no list
    change = {"password": short, "current_password": PASSWORD}
    refused = await client.patch("/users/me", headers=headers, json=change)
    assert refused.status_code == 400, refused.text
    assert "15" in refused.json()["detail"]["message"]

    await enable(client, headers, clock)
    accepted = await client.patch("/users/me", headers=headers, json=change)
    assert accepted.status_code == 200, accepted.text
