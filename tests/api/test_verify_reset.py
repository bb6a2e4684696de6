"""Email verification and password reset, with tokens delivered by the default notifier."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from authsvc.db.models import AuditEvent
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser, delivered, token_from_console

NEW_PASSWORD = "a brand new passphrase"


async def test_verify_flow(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    capsys: pytest.CaptureFixture[str],
    services: AppServices,
) -> None:
    await make_user("verify@example.com", is_verified=False)
    response = await client.post("/auth/request-verify-token", json={"email": "verify@example.com"})
    assert response.status_code == 202
    token = token_from_console(await delivered(services, capsys), "verify")

    verified = await client.post("/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["is_verified"] is True

    again = await client.post("/auth/verify", json={"token": token})
    assert again.status_code == 400
    assert again.json()["detail"]["code"] == "VERIFY_USER_ALREADY_VERIFIED"


async def test_verify_request_for_unknown_email_looks_the_same(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str], services: AppServices
) -> None:
    response = await client.post("/auth/request-verify-token", json={"email": "no@example.com"})
    assert response.status_code == 202
    assert "Verify your email" not in await delivered(services, capsys)


async def test_verify_rejects_bad_tokens(client: httpx.AsyncClient) -> None:
    for token in ("", "garbage", "a.b.c"):
        response = await client.post("/auth/verify", json={"token": token})
        assert response.status_code == 400
        assert response.json()["detail"]["code"] == "VERIFY_USER_BAD_TOKEN"


async def test_reset_flow(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    capsys: pytest.CaptureFixture[str],
    services: AppServices,
) -> None:
    await make_user("reset@example.com")
    response = await client.post("/auth/forgot-password", json={"email": "reset@example.com"})
    assert response.status_code == 202
    token = token_from_console(await delivered(services, capsys), "reset-password")

    weak = await client.post("/auth/reset-password", json={"token": token, "password": "short"})
    assert weak.status_code == 400
    assert weak.json()["detail"]["code"] == "RESET_PASSWORD_INVALID_PASSWORD"

    signed_in = await login("reset@example.com")
    done = await client.post(
        "/auth/reset-password", json={"token": token, "password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text
    # A reset ends every session: the token from before no longer works.
    assert (await client.get("/users/me", headers=signed_in)).status_code == 401
    await login("reset@example.com", NEW_PASSWORD)

    # The token was bound to the old password hash: it cannot be replayed.
    replay = await client.post(
        "/auth/reset-password", json={"token": token, "password": "yet another passphrase"}
    )
    assert replay.status_code == 400
    assert replay.json()["detail"]["code"] == "RESET_PASSWORD_BAD_TOKEN"


async def test_forgot_password_for_unknown_email_looks_the_same(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str], services: AppServices
) -> None:
    response = await client.post("/auth/forgot-password", json={"email": "ghost@example.com"})
    assert response.status_code == 202
    assert "Reset your password" not in await delivered(services, capsys)


async def test_reset_and_verify_tokens_are_not_access_tokens(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    capsys: pytest.CaptureFixture[str],
    services: AppServices,
) -> None:
    await make_user("mix@example.com", is_verified=False)
    await client.post("/auth/forgot-password", json={"email": "mix@example.com"})
    await client.post("/auth/request-verify-token", json={"email": "mix@example.com"})
    out = await delivered(services, capsys)
    for purpose in ("reset-password", "verify"):
        token = token_from_console(out, purpose)
        response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, purpose

    reset_token = token_from_console(out, "reset-password")
    as_verify = await client.post("/auth/verify", json={"token": reset_token})
    assert as_verify.status_code == 400


async def test_access_token_is_not_a_reset_token(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("cross@example.com")
    access = (await login("cross@example.com"))["Authorization"].removeprefix("Bearer ")
    response = await client.post(
        "/auth/reset-password", json={"token": access, "password": NEW_PASSWORD}
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "RESET_PASSWORD_BAD_TOKEN"
    await login("cross@example.com", PASSWORD)


async def test_inactive_user_gets_no_reset_token(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    capsys: pytest.CaptureFixture[str],
    services: AppServices,
) -> None:
    await make_user("sleep@example.com", is_active=False)
    response = await client.post("/auth/forgot-password", json={"email": "sleep@example.com"})
    assert response.status_code == 202
    assert "Reset your password" not in await delivered(services, capsys)


async def _actions(services: AppServices, user_id: object) -> list[tuple[str, object, object]]:
    async with services.sessionmaker() as db:
        query = select(AuditEvent).where(AuditEvent.target_id == str(user_id))
        rows = (await db.scalars(query)).all()
        return [(e.action, e.actor_id, e.client_ip) for e in rows]


async def test_reset_change_and_verification_are_audited(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    capsys: pytest.CaptureFixture[str],
    services: AppServices,
) -> None:
    user = await make_user("trail@example.com", is_verified=False)
    ip = "203.0.113.10"
    await client.post("/auth/request-verify-token", json={"email": "trail@example.com"})
    token = token_from_console(await delivered(services, capsys), "verify")
    assert (await client.post("/auth/verify", json={"token": token})).status_code == 200
    assert await _actions(services, user.id) == [("user.email.verify", user.id, ip)]

    await client.post("/auth/forgot-password", json={"email": "trail@example.com"})
    token = token_from_console(await delivered(services, capsys), "reset-password")
    reset = await client.post(
        "/auth/reset-password", json={"token": token, "password": NEW_PASSWORD}
    )
    assert reset.status_code == 200, reset.text
    assert ("user.password.reset", user.id, ip) in await _actions(services, user.id)

    headers = await login("trail@example.com", NEW_PASSWORD)
    changed = await client.patch(
        "/users/me",
        headers=headers,
        json={"password": "yet another passphrase", "current_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    actions = [a for a, _, _ in await _actions(services, user.id) if not a.startswith("auth.")]
    assert sorted(actions) == ["user.email.verify", "user.password.change", "user.password.reset"]
    # A refused change leaves no trace.
    refused = await client.patch(
        "/users/me",
        headers=await login("trail@example.com", "yet another passphrase"),
        json={"password": "short", "current_password": "yet another passphrase"},
    )
    assert refused.status_code == 400
    trail = [a for a, _, _ in await _actions(services, user.id) if not a.startswith("auth.")]
    assert len(trail) == 3
