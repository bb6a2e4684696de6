"""Device tokens (OWASP "device cookies"): the owner gets in during an attack on the account;
forged, expired, revoked and other accounts' tokens count for nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from authsvc.db.models import LoginThrottle, TrustedDevice
from authsvc.db.repositories.throttles import MAX_DEVICES_PER_ACCOUNT
from authsvc.security.device_tokens import DeviceTokenCodec
from authsvc.services.container import AppServices
from tests.api.test_login_throttle import FakeClock, assert_throttled, fail, form, throttle_row
from tests.conftest import PASSWORD, TOKEN_SECRET, MakeUser

ROOMY = "100000/minute"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The per-username rule stays tight: a trusted device must never meet it.
    return {"ratelimit_login_ip": ROOMY, "ratelimit_login_username": "3/minute"}


@pytest.fixture
def clock(services: AppServices, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(services.grants.get("password"), "clock", fake, raising=False)
    return fake


def attacker(app: Any, number: int) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{number}", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def sign_in(client: httpx.AsyncClient, email: str, device: str | None = None) -> str:
    extra = {"device_token": device} if device else {}
    response = await client.post("/auth/token", data=form(email, PASSWORD, **extra))
    assert response.status_code == 200, response.text
    token = response.json()["device_token"]
    assert isinstance(token, str) and token
    return token


async def attack(app: Any, email: str, times: int) -> None:
    """Wrong guesses from many addresses, until the account is throttled and limited."""
    for number in range(times):
        async with attacker(app, number) as client:
            await client.post("/auth/token", data=form(email))


def unit_codec() -> DeviceTokenCodec:
    return DeviceTokenCodec(TOKEN_SECRET, lifetime_seconds=3600)


def test_codec_round_trip_and_refusals() -> None:
    codec = unit_codec()
    now = datetime.now(UTC)
    device, user = uuid.uuid4(), uuid.uuid4()
    token = codec.issue(device, user, now)
    claims = codec.read(token, now)
    assert claims is not None and (claims.device_id, claims.user_id) == (device, user)
    assert codec.read(token, now + timedelta(seconds=3601)) is None  # expired
    assert DeviceTokenCodec("another secret " * 3, 3600).read(token, now) is None
    payload, _, mac = token.rpartition(".")
    forged = payload.replace(user.hex, uuid.uuid4().hex) + "." + mac
    assert codec.read(forged, now) is None
    for garbage in ("", ".", "a.b.c.d.e", "x" * 10_000, "\udcff.\u0663", token + "x"):
        assert codec.read(garbage, now) is None


async def test_owner_with_a_device_token_gets_in_during_an_attack(
    app: Any,
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    services: AppServices,
) -> None:
    await make_user("owner@example.com")
    device = await sign_in(client, "owner@example.com")
    await attack(app, "owner@example.com", 12)  # throttled, and the username rule spent
    async with attacker(app, 99) as other:
        refused = await other.post("/auth/token", data=form("owner@example.com", PASSWORD))
    assert refused.status_code == 429  # an untrusted attempt, even with the right password
    again = await sign_in(client, "owner@example.com", device)
    # The device is still trusted with the token it got back (refreshed or the same).
    await sign_in(client, "owner@example.com", again)
    # A trusted sign-in resets the account throttle too.
    assert await throttle_row(services, "owner@example.com") is None


async def test_owner_gets_in_when_the_account_is_locked(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    services: AppServices,
) -> None:
    await make_user("locked@example.com")
    device = await sign_in(client, "locked@example.com")
    async with services.sessionmaker() as session:
        session.add(LoginThrottle(account_key="locked@example.com", failures=100))
        await session.commit()
    response = await client.post("/auth/token", data=form("locked@example.com", PASSWORD))
    assert response.status_code == 429 and response.json()["detail"]["code"] == "LOGIN_LOCKED"
    await sign_in(client, "locked@example.com", device)
    await sign_in(client, "locked@example.com")  # the lock is gone


async def test_ignored_device_tokens(
    app: Any,
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    services: AppServices,
) -> None:
    await make_user("owner@example.com")
    await make_user("other@example.com")
    own = await sign_in(client, "owner@example.com")
    others = await sign_in(client, "other@example.com")
    revoked = await sign_in(client, "owner@example.com")
    async with services.sessionmaker() as session:
        claims = unit_codec().read(revoked, clock.now)
        assert claims is not None
        await session.execute(
            update(TrustedDevice)
            .where(TrustedDevice.id == claims.device_id)
            .values(revoked_at=clock.now)
        )
        await session.commit()
    payload, _, mac = own.rpartition(".")
    forged = payload[:-1] + ("1" if payload[-1] != "1" else "2") + "." + mac
    # Two untrusted sign-ins so far; this third attempt spends the username rule (3/minute).
    await fail(client, "owner@example.com", 1)
    await sign_in(client, "owner@example.com", own)  # the real one still works
    for token in (forged, others, revoked, "garbage", "x" * 5000, "\u0663.\u0663"):
        response = await client.post(
            "/auth/token", data=form("owner@example.com", PASSWORD, device_token=token)
        )
        # Judged as untrusted: limited like anyone; never a 500, never a word about why.
        assert response.status_code == 429, (token, response.text)
        assert "device" not in response.text.lower()
    clock.advance(services.settings.device_token_lifetime_seconds + 1)
    expired = await client.post(
        "/auth/token", data=form("owner@example.com", PASSWORD, device_token=own)
    )
    assert expired.status_code == 429


async def test_device_failures_count_on_the_device(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    clock: FakeClock,
    services: AppServices,
) -> None:
    await make_user("careful@example.com")
    device = await sign_in(client, "careful@example.com")
    limit = services.settings.device_max_failures
    for _ in range(limit):
        response = await client.post(
            "/auth/token", data=form("careful@example.com", device_token=device)
        )
        assert response.status_code == 400, response.text
    held = await client.post(
        "/auth/token", data=form("careful@example.com", PASSWORD, device_token=device)
    )
    assert_throttled(held, retry_after=1)
    assert await throttle_row(services, "careful@example.com") is None  # not the account's
    clock.advance(1)
    await sign_in(client, "careful@example.com", device)  # a success resets the device
    response = await client.post(
        "/auth/token", data=form("careful@example.com", device_token=device)
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "settings_overrides", [{"ratelimit_login_ip": ROOMY, "ratelimit_login_username": ROOMY}]
)
async def test_an_account_keeps_a_bounded_number_of_trusted_devices(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    """Every sign-in without a device token trusts a new device: the account keeps the most
    recently used ones only, so signing in from a script cannot grow the table without end."""
    user = await make_user("many-devices@example.com")
    first = await sign_in(client, "many-devices@example.com")
    for _ in range(MAX_DEVICES_PER_ACCOUNT + 5):
        last = await sign_in(client, "many-devices@example.com")
    async with services.sessionmaker() as db:
        count = await db.scalar(
            select(func.count()).select_from(TrustedDevice).where(TrustedDevice.user_id == user.id)
        )
    assert count == MAX_DEVICES_PER_ACCOUNT
    # The newest device is still trusted (its token comes back renewed for the same device);
    # the oldest was let go.
    renewed = await sign_in(client, "many-devices@example.com", last)
    last_claims = unit_codec().read(last, datetime.now(UTC))
    renewed_claims = unit_codec().read(renewed, datetime.now(UTC))
    assert last_claims is not None and renewed_claims is not None
    assert renewed_claims.device_id == last_claims.device_id
    claims = unit_codec().read(first, datetime.now(UTC))
    assert claims is not None
    async with services.sessionmaker() as db:
        assert await db.get(TrustedDevice, claims.device_id) is None
