"""Sessions and refresh tokens: rotation, reuse detection, grace window, logout, revocation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from authsvc.db.models import RefreshToken, Session, utcnow
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, MakeUser

Tokens = dict[str, Any]


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> Tokens:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": email, "password": password},
        headers={"User-Agent": "pytest-browser/1.0"},
    )
    assert response.status_code == 200, response.text
    tokens: Tokens = response.json()
    return tokens


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post(
        "/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def bearer(tokens: Tokens) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


async def test_login_returns_a_refresh_token_and_a_session(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    await make_user("s@example.com")
    tokens = await sign_in(client, "s@example.com")
    assert len(tokens["refresh_token"]) >= 43  # 256 bits, base64url
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    async with services.sessionmaker() as db:
        stored = (await db.scalars(select(RefreshToken))).one()
        session = await db.get(Session, stored.session_id)
    assert stored.token_hash != tokens["refresh_token"]  # only the hash is kept
    assert tokens["refresh_token"] not in stored.token_hash
    assert session is not None and claims["sid"] == str(session.id)
    assert (session.client_ip, session.user_agent) == ("203.0.113.10", "pytest-browser/1.0")


async def test_rotation(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    await make_user("r@example.com")
    first = await sign_in(client, "r@example.com")
    second = (await refresh(client, first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/users/me", headers=bearer(second))).status_code == 200
    third = await refresh(client, second["refresh_token"])
    assert third.status_code == 200
    old_sid = jwt.decode(first["access_token"], options={"verify_signature": False})["sid"]
    new_sid = jwt.decode(third.json()["access_token"], options={"verify_signature": False})["sid"]
    assert old_sid == new_sid  # one session, one family


async def test_reuse_after_the_grace_window_revokes_the_family(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    await make_user("stolen@example.com")
    first = await sign_in(client, "stolen@example.com")
    second = (await refresh(client, first["refresh_token"])).json()
    # Pretend the first use was a minute ago: beyond the 10 s grace window.
    async with services.sessionmaker() as db:
        await db.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None))
            .values(used_at=utcnow() - timedelta(seconds=60))
        )
        await db.commit()
    replay = await refresh(client, first["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    assert code(replay) == "REFRESH_TOKEN_REUSED"
    # The whole family is gone: the legitimate newest tokens too.
    assert code(await refresh(client, second["refresh_token"])) == "SESSION_ENDED"
    me = await client.get("/users/me", headers=bearer(second))
    assert me.status_code == 401


async def test_two_tabs_refreshing_at_once_within_the_grace_window(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("tabs@example.com")
    first = await sign_in(client, "tabs@example.com")
    tab_a = await refresh(client, first["refresh_token"])
    tab_b = await refresh(client, first["refresh_token"])
    assert tab_a.status_code == tab_b.status_code == 200
    assert tab_a.json()["refresh_token"] != tab_b.json()["refresh_token"]
    for tab in (tab_a, tab_b):
        assert (await refresh(client, tab.json()["refresh_token"])).status_code == 200
    # Truly concurrent: both claim the same token; one wins, the other is within the grace.
    again = await sign_in(client, "tabs@example.com")
    racing = await asyncio.gather(*(refresh(client, again["refresh_token"]) for _ in range(3)))
    assert [r.status_code for r in racing] == [200, 200, 200]


class TestNoGrace:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"refresh_reuse_grace_seconds": 0}

    async def test_immediate_reuse_is_detected(
        self, client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
    ) -> None:
        await make_user("strict@example.com")
        first = await sign_in(client, "strict@example.com")
        assert (await refresh(client, first["refresh_token"])).status_code == 200
        async with services.sessionmaker() as db:
            await db.execute(
                update(RefreshToken).values(used_at=utcnow() - timedelta(seconds=1))
                .where(RefreshToken.used_at.is_not(None))
            )  # fmt: skip
            await db.commit()
        assert code(await refresh(client, first["refresh_token"])) == "REFRESH_TOKEN_REUSED"


async def test_idle_and_absolute_expiry(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    await make_user("idle@example.com")
    idle = await sign_in(client, "idle@example.com")
    absolute = await sign_in(client, "idle@example.com")
    idle_sid = jwt.decode(idle["access_token"], options={"verify_signature": False})["sid"]
    abs_sid = jwt.decode(absolute["access_token"], options={"verify_signature": False})["sid"]
    async with services.sessionmaker() as db:
        await db.execute(
            update(Session).where(Session.id == uuid.UUID(idle_sid))
            .values(last_used_at=utcnow() - timedelta(days=15))
        )  # fmt: skip
        await db.execute(
            update(Session).where(Session.id == uuid.UUID(abs_sid))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )  # fmt: skip
        await db.commit()
    assert code(await refresh(client, idle["refresh_token"])) == "SESSION_ENDED"
    assert code(await refresh(client, absolute["refresh_token"])) == "SESSION_ENDED"
    assert (await client.get("/users/me", headers=bearer(absolute))).status_code == 401


async def test_logout_ends_this_session_at_once(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("out@example.com")
    here = await sign_in(client, "out@example.com")
    there = await sign_in(client, "out@example.com")
    assert (await client.post("/auth/logout", headers=bearer(here))).status_code == 204
    refused = await client.get("/users/me", headers=bearer(here))
    assert refused.status_code == 401
    guarded = await client.get("/users/me/sessions", headers=bearer(here))
    assert guarded.status_code == 401 and code(guarded) == "TOKEN_REVOKED"
    assert code(await refresh(client, here["refresh_token"])) == "SESSION_ENDED"
    # The other device is still signed in.
    sessions = (await client.get("/users/me/sessions", headers=bearer(there))).json()
    assert len(sessions) == 1 and sessions[0]["current"] is True
    assert (await refresh(client, there["refresh_token"])).status_code == 200


async def test_logout_all_and_ending_one_session(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("all@example.com")
    one, two, three = [await sign_in(client, "all@example.com") for _ in range(3)]
    listed = (await client.get("/users/me/sessions", headers=bearer(one))).json()
    assert len(listed) == 3 and sum(s["current"] for s in listed) == 1
    other = next(s for s in listed if not s["current"])
    ended = await client.delete(f"/users/me/sessions/{other['id']}", headers=bearer(one))
    assert ended.status_code == 204
    again = await client.delete(f"/users/me/sessions/{other['id']}", headers=bearer(one))
    assert again.status_code == 404 and code(again) == "SESSION_NOT_FOUND"
    assert len((await client.get("/users/me/sessions", headers=bearer(one))).json()) == 2

    assert (await client.post("/auth/logout-all", headers=bearer(two))).status_code == 204
    for tokens in (one, two, three):
        assert (await client.get("/users/me", headers=bearer(tokens))).status_code == 401
        assert (await refresh(client, tokens["refresh_token"])).status_code == 400


async def test_someone_elses_session_is_not_found(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("mine@example.com")
    await make_user("theirs@example.com")
    mine = await sign_in(client, "mine@example.com")
    theirs = await sign_in(client, "theirs@example.com")
    their_sid = jwt.decode(theirs["access_token"], options={"verify_signature": False})["sid"]
    response = await client.delete(f"/users/me/sessions/{their_sid}", headers=bearer(mine))
    assert response.status_code == 404
    assert (await client.get("/users/me", headers=bearer(theirs))).status_code == 200


async def test_password_change_and_deactivation_end_sessions(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    user = await make_user("pw@example.com")
    tokens = await sign_in(client, "pw@example.com")
    changed = await client.patch(
        "/users/me",
        headers=bearer(tokens),
        json={"password": "a whole new passphrase", "current_password": PASSWORD},
    )
    assert changed.status_code == 200
    assert (await client.get("/users/me", headers=bearer(tokens))).status_code == 401
    assert code(await refresh(client, tokens["refresh_token"])) == "SESSION_ENDED"

    fresh = await sign_in(client, "pw@example.com", "a whole new passphrase")
    off = await client.patch(f"/users/{user.id}", headers=admin_headers, json={"is_active": False})
    assert off.status_code == 200
    assert code(await refresh(client, fresh["refresh_token"])) == "SESSION_ENDED"


async def test_admins_list_and_end_a_users_sessions(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    user = await make_user("watched@example.com")
    tokens = await sign_in(client, "watched@example.com")
    listed = (await client.get(f"/users/{user.id}/sessions", headers=admin_headers)).json()
    assert [s["client_ip"] for s in listed] == ["203.0.113.10"]
    ended = await client.delete(f"/users/{user.id}/sessions", headers=admin_headers)
    assert ended.status_code == 204
    assert (await client.get("/users/me", headers=bearer(tokens))).status_code == 401
    audit = (await client.get("/audit?action=user.sessions.revoke", headers=admin_headers)).json()
    assert audit["total"] == 1 and audit["items"][0]["after"] == {"ended": 1}
    plain = await sign_in(client, "watched@example.com")
    denied = await client.get(f"/users/{user.id}/sessions", headers=bearer(plain))
    assert denied.status_code == 403


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "refresh_token"},
        {"grant_type": "refresh_token", "refresh_token": ""},
        {"grant_type": "refresh_token", "refresh_token": "x" * 300},
    ],
)
async def test_malformed_refresh_requests(client: httpx.AsyncClient, data: dict[str, str]) -> None:
    response = await client.post("/auth/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_tokens_cannot_stand_in_for_each_other(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("swap@example.com")
    tokens = await sign_in(client, "swap@example.com")
    as_refresh = await refresh(client, tokens["access_token"][:256])
    assert as_refresh.status_code == 400 and code(as_refresh) == "REFRESH_TOKEN_INVALID"
    as_access = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )
    assert as_access.status_code == 401
    unknown = await refresh(client, "not-a-token-we-issued")
    assert unknown.json()["error"] == "invalid_grant"
