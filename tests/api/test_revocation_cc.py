"""Revoking a client-credentials access token (RFC 7009) ends it for introspection and for
``/authz/check``; only the client it was issued to can revoke it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from authsvc.services.container import AppServices
from tests.api.test_oauth import basic, register_client, user_tokens
from tests.conftest import MakeUser

Headers = dict[str, str]


async def service_token(client: httpx.AsyncClient, created: dict[str, Any]) -> str:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(created["id"], created["client_secret"]),
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def introspect(client: httpx.AsyncClient, auth: dict[str, Any], token: str) -> bool:
    response = await client.post(
        "/auth/introspect", data={"token": token}, headers=basic(auth["id"], auth["client_secret"])
    )
    assert response.status_code == 200, response.text
    active: bool = response.json()["active"]
    return active


async def check_as(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """``/authz/check`` with a service token (it accepts them)."""
    body = {
        "principal": {"type": "User", "id": "00000000-0000-0000-0000-000000000000"},
        "action": "users:read",
        "resource": {"type": "AuditLog", "id": "audit"},
    }
    return await client.post(
        "/authz/check", json=body, headers={"Authorization": f"Bearer {token}"}
    )


async def test_revoked_service_token_is_inactive(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    orders = await register_client(client, admin_headers, ["authz:check"])
    token = await service_token(client, orders)
    assert await introspect(client, orders, token) is True
    assert (await check_as(client, token)).status_code != 401

    revoked = await client.post(
        "/auth/revoke",
        data={"token": token, "token_type_hint": "access_token"},
        headers=basic(orders["id"], orders["client_secret"]),
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.content == b""
    assert await introspect(client, orders, token) is False
    refused = await check_as(client, token)
    assert refused.status_code == 401
    assert refused.json()["detail"]["code"] == "TOKEN_REVOKED"
    # Once more: still 200, still inactive (§2.2: nothing to do is no error).
    again = await client.post(
        "/auth/revoke", data={"token": token}, headers=basic(orders["id"], orders["client_secret"])
    )
    assert again.status_code == 200
    # The client's other tokens are untouched: revocation is per token, not per client.
    fresh = await service_token(client, orders)
    assert await introspect(client, orders, fresh) is True


async def test_only_the_owning_client_can_revoke(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    orders = await register_client(client, admin_headers)
    billing = await register_client(client, admin_headers)
    token = await service_token(client, orders)

    # RFC 7009 §2.1: the server checks that the token was issued to the requesting client.
    # Another client's token is, for this client, an invalid token: 200 and no effect (§2.2).
    other = await client.post(
        "/auth/revoke",
        data={"token": token},
        headers=basic(billing["id"], billing["client_secret"]),
    )
    assert other.status_code == 200
    assert await introspect(client, orders, token) is True
    # Without client authentication: a confidential client's token is not revoked either.
    anonymous = await client.post("/auth/revoke", data={"token": token})
    assert anonymous.status_code == 200
    assert await introspect(client, orders, token) is True
    # Wrong credentials stay an error (invalid_client), as before.
    wrong = await client.post(
        "/auth/revoke", data={"token": token}, headers=basic(orders["id"], "not-the-secret")
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert await introspect(client, orders, token) is True


async def test_concurrent_revocations_of_one_token(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    orders = await register_client(client, admin_headers)
    token = await service_token(client, orders)
    auth = basic(orders["id"], orders["client_secret"])
    answers = await asyncio.gather(
        *(client.post("/auth/revoke", data={"token": token}, headers=auth) for _ in range(8))
    )
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert await introspect(client, orders, token) is False


async def test_expired_revocations_are_purged(
    client: httpx.AsyncClient, admin_headers: Headers, services: AppServices
) -> None:
    from authsvc.db.models import RevokedToken

    orders = await register_client(client, admin_headers)
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with services.sessionmaker() as db:
        db.add(RevokedToken(jti="gone-long-ago", client_id=orders["id"], expires_at=past))
        await db.commit()
    token = await service_token(client, orders)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    auth = basic(orders["id"], orders["client_secret"])
    assert (
        await client.post("/auth/revoke", data={"token": token}, headers=auth)
    ).status_code == 200
    async with services.sessionmaker() as db:
        kept = set(await db.scalars(select(RevokedToken.jti)))
        expiry = await db.scalar(select(RevokedToken.expires_at).where(RevokedToken.jti == jti))
    assert "gone-long-ago" not in kept
    assert jti in kept  # kept until the token would have expired anyway
    assert expiry is not None and expiry > datetime.now(UTC)
    assert await introspect(client, orders, token) is False
    # Deleting the client drops its revocations with it (its tokens are dead anyway).
    assert (
        await client.delete(f"/clients/{orders['id']}", headers=admin_headers)
    ).status_code == 204
    async with services.sessionmaker() as db:
        assert await db.get(RevokedToken, jti) is None


async def test_user_tokens_are_revoked_as_before(
    client: httpx.AsyncClient, admin_headers: Headers, make_user: MakeUser
) -> None:
    orders = await register_client(client, admin_headers)
    tokens = await user_tokens(client, make_user)
    access = tokens["access_token"]
    assert await introspect(client, orders, access) is True
    # A public app revokes its user's token without client credentials; the session ends.
    assert (await client.post("/auth/revoke", data={"token": access})).status_code == 200
    assert await introspect(client, orders, access) is False
    assert await introspect(client, orders, tokens["refresh_token"]) is False
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 401


@pytest.mark.parametrize("hint", ["refresh_token", "bogus"])
async def test_wrong_hint_still_revokes(
    client: httpx.AsyncClient, admin_headers: Headers, hint: str
) -> None:
    # RFC 7009 §2.1: a wrong hint only makes the server search further.
    orders = await register_client(client, admin_headers)
    token = await service_token(client, orders)
    auth = basic(orders["id"], orders["client_secret"])
    response = await client.post(
        "/auth/revoke", data={"token": token, "token_type_hint": hint}, headers=auth
    )
    assert response.status_code == 200
    assert await introspect(client, orders, token) is False
