"""A password-reset token is single use even when its uses race (issue 11, item 6)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from authsvc.services.container import AppServices
from tests.conftest import MakeUser, delivered, token_from_console

RACERS = 20


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The per-IP reset limit (10/hour) would answer most racers with 429, and the sign-in
    # limits (and the account's sign-in throttle) the check of every password afterwards.
    return {
        "ratelimit_password_reset_ip": "1000/hour",
        "ratelimit_login_ip": "1000/minute",
        "ratelimit_login_username": "1000/minute",
        "login_throttle_threshold": 100,
    }


async def test_concurrent_uses_of_one_reset_token_succeed_once(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await make_user("race@example.com")
    sent = await client.post("/auth/forgot-password", json={"email": "race@example.com"})
    assert sent.status_code == 202
    token = token_from_console(await delivered(services, capsys), "reset-password")

    passwords = [f"racing passphrase number {i:02d}" for i in range(RACERS)]
    answers = await asyncio.gather(
        *(
            client.post("/auth/reset-password", json={"token": token, "password": password})
            for password in passwords
        )
    )
    winners = [p for p, a in zip(passwords, answers, strict=True) if a.status_code == 200]
    losers = [a for a in answers if a.status_code != 200]
    assert len(winners) == 1, [a.status_code for a in answers]
    for answer in losers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["detail"]["code"] == "RESET_PASSWORD_BAD_TOKEN"

    # Only the winner's password signs in.
    for password in passwords:
        response = await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "race@example.com", "password": password},
        )
        expected = 200 if password == winners[0] else 400
        assert response.status_code == expected, (password, response.text)
