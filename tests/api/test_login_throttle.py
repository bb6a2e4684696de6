"""Per-account sign-in throttling (issue 13): the delay curve, the 100-failure lock, the owner's
notice, the admin view and unlock, EMAIL_NOT_VERIFIED, and parallel guesses.

Time is the password grant's clock (``FakeClock`` below), never a sleep.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from authsvc.db.models import AuditEvent, LoginThrottle
from authsvc.services import audit
from authsvc.services.container import AppServices
from authsvc.services.throttle import ThrottleRules
from tests.conftest import PASSWORD, Login, MakeUser, delivered, token_from_console

ROOMY = "100000/minute"
NOTICE = "Sign-in attempts on your account"


def form(username: str, password: str = "wrong password!", **extra: str) -> dict[str, str]:
    return {"grant_type": "password", "username": username, "password": password, **extra}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The limiter's own login rules out of the way: this file is about the account throttle.
    return {"ratelimit_login_ip": ROOMY, "ratelimit_login_username": ROOMY}


@pytest.fixture
def clock(services: AppServices, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(services.grants.get("password"), "clock", fake, raising=False)
    return fake


class HashCounter:
    def __init__(self) -> None:
        self.calls = 0


@pytest.fixture
def hashes(services: AppServices, monkeypatch: pytest.MonkeyPatch) -> HashCounter:
    """Counts password evaluations (a real check or the dummy one for an unknown address)."""
    counter = HashCounter()
    hasher = services.hasher

    def counting(name: str) -> Callable[..., Awaitable[Any]]:
        original = getattr(hasher, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return await original(*args, **kwargs)

        return wrapper

    for name in ("verify_and_update", "dummy_verify"):
        monkeypatch.setattr(hasher, name, counting(name))
    return counter


async def throttle_row(services: AppServices, key: str) -> LoginThrottle | None:
    async with services.sessionmaker() as session:
        return await session.get(LoginThrottle, key)


async def events(services: AppServices, action: str) -> list[AuditEvent]:
    async with services.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        return list((await session.execute(query)).scalars())


def assert_throttled(response: httpx.Response, retry_after: int | None = None) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "invalid_grant"
    assert body["detail"]["code"] == "LOGIN_THROTTLED"
    if retry_after is not None:
        assert response.headers["retry-after"] == str(retry_after)
    assert int(response.headers["retry-after"]) >= 1


async def fail(client: httpx.AsyncClient, username: str, times: int) -> None:
    for _ in range(times):
        response = await client.post("/auth/token", data=form(username))
        assert response.status_code == 400, response.text
        assert response.json()["detail"]["code"] == "LOGIN_BAD_CREDENTIALS"


def test_the_curve_doubles_from_the_threshold_up_to_the_maximum() -> None:
    rules = ThrottleRules(
        threshold=5, base_delay=1.0, max_delay=900.0, max_failures=100, device_max_failures=10
    )
    assert [rules.account_delay(n) for n in (0, 4)] == [None, None]
    delays = [rules.account_delay(n) for n in (5, 6, 7, 8, 14, 15, 99)]
    assert [d.total_seconds() if d else None for d in delays] == [1, 2, 4, 8, 512, 900, 900]
    assert rules.device_delay(9) is None and rules.device_delay(10) == timedelta(seconds=1)


async def test_delay_curve_and_held_attempts_are_not_evaluated(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    hashes: HashCounter,
    services: AppServices,
) -> None:
    await make_user("owner@example.com")
    await fail(client, "owner@example.com", 5)  # below the threshold: no delay at all
    assert hashes.calls == 5
    for delay in (1, 2, 4, 8):
        # Even the right password is not evaluated while held back.
        held = await client.post("/auth/token", data=form("Owner@Example.com", PASSWORD))
        assert_throttled(held, retry_after=delay)
        clock.advance(delay - 0.5)
        assert_throttled(await client.post("/auth/token", data=form("owner@example.com")), 1)
        clock.advance(0.5)
        await fail(client, "owner@example.com", 1)
    assert hashes.calls == 9  # 5 + one a step: the held-back attempts cost no hash
    row = await throttle_row(services, "owner@example.com")
    assert row is not None and row.failures == 9
    clock.advance(16)
    signed_in = await client.post("/auth/token", data=form("owner@example.com", PASSWORD))
    assert signed_in.status_code == 200, signed_in.text
    assert await throttle_row(services, "owner@example.com") is None  # a success resets it
    await fail(client, "owner@example.com", 5)


async def test_unknown_address_is_throttled_exactly_like_a_known_one(
    client: httpx.AsyncClient, make_user: MakeUser, clock: FakeClock, services: AppServices
) -> None:
    await make_user("known@example.com")
    answers = {}
    for name in ("known@example.com", "ghost@example.com"):
        await fail(client, name, 5)
        answers[name] = await client.post("/auth/token", data=form(name))
    known, ghost = answers["known@example.com"], answers["ghost@example.com"]
    assert_throttled(ghost)
    assert known.status_code == ghost.status_code
    assert known.json() == ghost.json()
    assert known.headers["retry-after"] == ghost.headers["retry-after"]
    assert await throttle_row(services, "ghost@example.com") is not None


async def test_unknown_and_known_answers_match_at_every_step(
    client: httpx.AsyncClient, make_user: MakeUser, clock: FakeClock
) -> None:
    await make_user("known@example.com")
    for _ in range(8):
        known = await client.post("/auth/token", data=form("known@example.com"))
        ghost = await client.post("/auth/token", data=form("ghost@example.com"))
        assert (known.status_code, known.json()) == (ghost.status_code, ghost.json())
        assert known.headers.get("retry-after") == ghost.headers.get("retry-after")
        clock.advance(0.5)


class TestManyAddresses:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "ratelimit_login_ip": ROOMY,
            "ratelimit_login_username": ROOMY,
            "trusted_proxies": "10.0.0.0/8",
        }

    async def test_failures_from_100_addresses_slow_then_lock_the_account(
        self,
        app: FastAPI,
        make_user: MakeUser,
        clock: FakeClock,
        services: AppServices,
        admin_headers: dict[str, str],
        client: httpx.AsyncClient,
    ) -> None:
        victim = await make_user("victim@example.com")
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as proxy:

            async def attempt(number: int, password: str = "wrong password!") -> httpx.Response:
                headers = {"X-Forwarded-For": f"198.51.{number // 250}.{number % 250}"}
                data = form("victim@example.com", password)
                return await proxy.post("/auth/token", data=data, headers=headers)

            statuses = [(await attempt(n)).status_code for n in range(8)]
            assert statuses == [400] * 5 + [429] * 3  # a new address each time changes nothing
            for number in range(8, 103):
                clock.advance(901)  # each guess waits out the delay: 100 failures in all
                assert (await attempt(number)).status_code == 400
            row = await throttle_row(services, "victim@example.com")
            assert row is not None and row.failures == 100
            clock.advance(86_400)
            locked = await attempt(200, PASSWORD)  # NIST SP 800-63B-4: no more evaluation
            assert locked.status_code == 429
            assert locked.json()["detail"]["code"] == "LOGIN_LOCKED"

            view = await client.get(f"/users/{victim.id}/login-throttle", headers=admin_headers)
            assert view.status_code == 200, view.text
            assert view.json()["failures"] == 100 and view.json()["locked"] is True
            cleared = await client.delete(
                f"/users/{victim.id}/login-throttle", headers=admin_headers
            )
            assert cleared.status_code == 204
            assert (await attempt(201, PASSWORD)).status_code == 200
        [unlock] = await events(services, audit.THROTTLE_CLEARED)
        assert unlock.target_id == str(victim.id)
        assert unlock.before is not None and unlock.before["failures"] == 100


async def test_the_owner_is_told_once_an_episode(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_user("told@example.com")
    await fail(client, "told@example.com", 4)
    assert NOTICE not in await delivered(services, capsys)
    await fail(client, "told@example.com", 1)
    out = await delivered(services, capsys)
    assert f"--- mail to told@example.com: {NOTICE} ---" in out
    assert out.count(NOTICE) == 1
    for _ in range(3):
        clock.advance(901)
        await fail(client, "told@example.com", 1)
    assert NOTICE not in await delivered(services, capsys)  # once an episode
    await fail(client, "nobody@example.com", 5)
    clock.advance(1)
    await fail(client, "nobody@example.com", 1)
    assert NOTICE not in await delivered(services, capsys)  # no account, no mail
    row = await throttle_row(services, "told@example.com")
    assert row is not None and row.notified_at is not None


async def test_audit_trail_of_sign_ins(
    client: httpx.AsyncClient, make_user: MakeUser, clock: FakeClock, services: AppServices
) -> None:
    user = await make_user("trail@example.com")
    await fail(client, "trail@example.com", 5)
    await fail(client, "x" * 200 + "@example.com", 1)
    assert_throttled(await client.post("/auth/token", data=form("trail@example.com")))
    clock.advance(5)
    ok = await client.post("/auth/token", data=form("trail@example.com", PASSWORD))
    assert ok.status_code == 200

    failed = await events(services, audit.LOGIN_FAILED)
    reasons = [(e.target_type, e.target_id, (e.after or {}).get("reason")) for e in failed]
    assert reasons.count(("user", str(user.id), "bad_credentials")) == 5
    assert reasons.count(("user", str(user.id), "throttled")) == 1
    assert ("account", ("x" * 200 + "@example.com")[:128], "bad_credentials") in reasons
    [throttled] = await events(services, audit.LOGIN_THROTTLED)
    assert throttled.target_id == str(user.id)
    [succeeded] = await events(services, audit.LOGIN_SUCCEEDED)
    assert succeeded.target_id == str(user.id) and succeeded.actor_id == user.id
    assert all("password" not in str(e.after) for e in failed)


async def test_parallel_guesses_while_throttled_are_evaluated_once(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    hashes: HashCounter,
    services: AppServices,
) -> None:
    await make_user("burst@example.com")
    await fail(client, "burst@example.com", 5)
    clock.advance(1)  # one attempt is due now
    before = hashes.calls
    answers = await asyncio.gather(
        *(client.post("/auth/token", data=form("burst@example.com")) for _ in range(10))
    )
    assert sorted(a.status_code for a in answers) == [400] + [429] * 9
    assert hashes.calls == before + 1
    row = await throttle_row(services, "burst@example.com")
    assert row is not None and row.failures == 6


async def test_parallel_failures_are_all_counted(
    client: httpx.AsyncClient, make_user: MakeUser, clock: FakeClock, services: AppServices
) -> None:
    await make_user("count@example.com")
    answers = await asyncio.gather(
        *(client.post("/auth/token", data=form("count@example.com")) for _ in range(4))
    )
    assert [a.status_code for a in answers] == [400] * 4
    row = await throttle_row(services, "count@example.com")
    assert row is not None and row.failures == 4


async def test_email_not_verified_only_after_the_right_password(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    assert services.settings.require_verified_email
    await make_user("unverified@example.com", is_verified=False)
    wrong = await client.post("/auth/token", data=form("unverified@example.com"))
    assert wrong.status_code == 400
    assert wrong.json()["detail"]["code"] == "LOGIN_BAD_CREDENTIALS"
    right = await client.post("/auth/token", data=form("unverified@example.com", PASSWORD))
    assert right.status_code == 400, right.text
    assert right.json()["error"] == "invalid_grant"
    assert right.json()["detail"]["code"] == "EMAIL_NOT_VERIFIED"
    assert "verify" in right.json()["error_description"].lower()
    assert "access_token" not in right.json()
    [failed] = [
        e
        for e in await events(services, audit.LOGIN_FAILED)
        if (e.after or {}).get("reason") == "email_not_verified"
    ]
    assert failed.target_type == "user"


class TestVerificationNotRequired:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"require_verified_email": False}

    async def test_unverified_account_signs_in(
        self, client: httpx.AsyncClient, make_user: MakeUser
    ) -> None:
        await make_user("relaxed@example.com", is_verified=False)
        response = await client.post("/auth/token", data=form("relaxed@example.com", PASSWORD))
        assert response.status_code == 200, response.text


async def test_admin_view_and_unlock(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    admin_headers: dict[str, str],
    clock: FakeClock,
    services: AppServices,
) -> None:
    user = await make_user("locked@example.com")
    path = f"/users/{user.id}/login-throttle"
    empty = await client.get(path, headers=admin_headers)
    assert empty.status_code == 200, empty.text
    assert empty.json() == {
        "failures": 0,
        "last_failure_at": None,
        "blocked_until": None,
        "locked": False,
        "notified_at": None,
    }
    await fail(client, "LOCKED@example.com", 5)
    clock.advance(1)
    await fail(client, "locked@example.com", 1)
    view = (await client.get(path, headers=admin_headers)).json()
    assert view["failures"] == 6 and view["locked"] is False
    assert view["blocked_until"] is not None and view["notified_at"] is not None

    await make_user("other@example.com")
    plain = await login("other@example.com")
    assert (await client.get(path, headers=plain)).status_code == 403
    assert (await client.delete(path, headers=plain)).status_code == 403
    other_id = (await client.get("/users/me", headers=plain)).json()["id"]
    own = await client.get(f"/users/{other_id}/login-throttle", headers=plain)
    assert own.status_code == 403  # not even one's own: an administrator's view
    assert (await client.get(path)).status_code == 401
    missing = f"/users/{uuid.uuid4()}/login-throttle"
    assert (await client.get(missing, headers=admin_headers)).status_code == 404

    assert (await client.delete(path, headers=admin_headers)).status_code == 204
    assert (await client.get(path, headers=admin_headers)).json()["failures"] == 0
    ok = await client.post("/auth/token", data=form("locked@example.com", PASSWORD))
    assert ok.status_code == 200
    [cleared] = await events(services, audit.THROTTLE_CLEARED)
    assert cleared.before is not None and cleared.before["failures"] == 6
    assert cleared.actor_email == "admin@example.com"


async def test_a_password_reset_clears_the_throttle(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_user("forgot@example.com")
    await fail(client, "forgot@example.com", 5)
    assert await throttle_row(services, "forgot@example.com") is not None
    await client.post("/auth/forgot-password", json={"email": "forgot@example.com"})
    token = token_from_console(await delivered(services, capsys), "reset-password")
    reset = await client.post(
        "/auth/reset-password", json={"token": token, "password": "a brand new passphrase"}
    )
    assert reset.status_code == 200, reset.text
    assert await throttle_row(services, "forgot@example.com") is None
    ok = await client.post("/auth/token", data=form("forgot@example.com", "a brand new passphrase"))
    assert ok.status_code == 200
