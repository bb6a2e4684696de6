"""Races through the in-process app (real concurrency with asyncio.gather, on both engines):
replays of one spent refresh token, and an update racing a deletion of the same user."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from authsvc.db.models import RefreshToken, Session
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, MakeUser

GRACE_MAX = 2
REPLAYS = 20


async def sign_in(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await client.post(
        "/auth/token", data={"grant_type": "password", "username": email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


async def live_refresh_tokens(services: AppServices, session_id: uuid.UUID) -> int:
    """Unspent refresh tokens of a live session: the chains that can still be continued."""
    async with services.sessionmaker() as db:
        query = (
            select(func.count())
            .select_from(RefreshToken)
            .join(Session, Session.id == RefreshToken.session_id)
            .where(RefreshToken.session_id == session_id, RefreshToken.used_at.is_(None))
            .where(Session.revoked_at.is_(None))
        )
        return int((await db.scalar(query)) or 0)


class TestRefreshReplaysAreBounded:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        # A wide window, so a loaded machine cannot push replays out of it; no IP limit in
        # the way of twenty refreshes from one address.
        return {
            "refresh_reuse_grace_seconds": 300,
            "refresh_reuse_grace_max": GRACE_MAX,
            "ratelimit_login_ip": "1000/minute",
        }

    async def test_twenty_concurrent_replays_mint_at_most_the_bound(
        self, client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
    ) -> None:
        await make_user("replayed@example.com")
        first = await sign_in(client, "replayed@example.com")
        sid = uuid.UUID(
            jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
        )

        answers = await asyncio.gather(
            *(refresh(client, first["refresh_token"]) for _ in range(REPLAYS))
        )

        ok = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code != 200]
        # One first use plus GRACE_MAX replays inside the window; every other one refused.
        assert len(ok) == 1 + GRACE_MAX, [a.status_code for a in answers]
        assert {(a.status_code, a.json()["error"], code(a)) for a in refused} == {
            (400, "invalid_grant", "REFRESH_TOKEN_REUSE_LIMIT")
        }
        assert await live_refresh_tokens(services, sid) == 1 + GRACE_MAX
        # The session itself lives on: each tab's chain keeps working.
        for answer in ok:
            assert (await refresh(client, answer.json()["refresh_token"])).status_code == 200
        assert await live_refresh_tokens(services, sid) == 1 + GRACE_MAX

    async def test_sequential_replays_stop_at_the_bound(
        self, client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
    ) -> None:
        await make_user("tabs@example.com")
        first = await sign_in(client, "tabs@example.com")
        statuses = [(await refresh(client, first["refresh_token"])).status_code for _ in range(5)]
        assert statuses == [200] * (1 + GRACE_MAX) + [400] * (4 - GRACE_MAX)
        async with services.sessionmaker() as db:
            spent = (
                await db.scalars(select(RefreshToken).where(RefreshToken.used_at.is_not(None)))
            ).one()
        assert spent.reuse_count == GRACE_MAX

    async def test_replaying_ones_own_new_tokens_does_not_multiply_them(
        self, client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
    ) -> None:
        """The per-token bound alone let a thief triple their tokens every round (replay the
        stolen one twice, then each new one twice, ...): a session holds at most
        1 + GRACE_MAX live refresh tokens, however they were minted."""
        await make_user("thief@example.com")
        first = await sign_in(client, "thief@example.com")
        sid = uuid.UUID(
            jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
        )
        held = [first["refresh_token"]]
        for _round in range(4):
            minted: list[str] = []
            for token in held:
                # Use it, then replay it concurrently as often as it goes.
                used = await refresh(client, token)
                if used.status_code == 200:
                    minted.append(used.json()["refresh_token"])
                replays = await asyncio.gather(*(refresh(client, token) for _ in range(3)))
                minted += [r.json()["refresh_token"] for r in replays if r.status_code == 200]
                assert await live_refresh_tokens(services, sid) <= 1 + GRACE_MAX
            held = minted
        assert 1 <= len(held) <= 1 + GRACE_MAX
        # What is held still works: the bound refuses replays, it ends nothing.
        assert (await refresh(client, held[0])).status_code == 200


class TestNoReplays:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"refresh_reuse_grace_max": 0, "ratelimit_login_ip": "1000/minute"}

    async def test_a_bound_of_zero_refuses_every_replay(
        self, client: httpx.AsyncClient, make_user: MakeUser
    ) -> None:
        await make_user("single@example.com")
        first = await sign_in(client, "single@example.com")
        answers = await asyncio.gather(*(refresh(client, first["refresh_token"]) for _ in range(5)))
        assert sorted(a.status_code for a in answers) == [200, 400, 400, 400, 400]


# --- PATCH racing DELETE of one user -------------------------------------------------------

USERS = 10


@pytest.mark.parametrize(
    "change",
    [
        {"is_active": False},
        {"attributes": {}},
        {"email": "renamed-{n}@example.com"},
        {"password": "an entirely new passphrase {n}"},
        # The flag bumps authz_version first: the row is written by an autoflush before the
        # password's own UPDATE, outside the user database adapter.
        {"is_superuser": True, "password": "an entirely new passphrase {n}"},
    ],
    ids=["is_active", "attributes", "email", "password", "superuser-and-password"],
)
async def test_update_racing_delete_is_never_a_500(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    mfa_admin_headers: dict[str, str],
    change: dict[str, Any],
) -> None:
    # With a second factor: deleting needs one (guardrail.destructive-needs-mfa).
    admin_headers = mfa_admin_headers
    users = [await make_user(f"doomed-{n}@example.com") for n in range(USERS)]

    def body(n: int) -> dict[str, Any]:
        return {k: v.format(n=n) if isinstance(v, str) else v for k, v in change.items()}

    calls = []
    for n, user in enumerate(users):
        calls.append(client.patch(f"/users/{user.id}", json=body(n), headers=admin_headers))
        calls.append(client.delete(f"/users/{user.id}", headers=admin_headers))
    answers = await asyncio.gather(*calls)

    patches, deletes = answers[0::2], answers[1::2]
    for answer in patches:
        assert answer.status_code in (200, 404, 409), (answer.status_code, answer.text)
        if answer.status_code != 200:
            assert code(answer) in ("USER_NOT_FOUND", "CONCURRENT_CHANGE"), answer.text
    for answer in deletes:
        assert answer.status_code in (204, 404, 409), (answer.status_code, answer.text)
    # Every user is gone in the end, whoever won each race.
    for user in users:
        gone = await client.get(f"/users/{user.id}", headers=admin_headers)
        assert gone.status_code == 404
