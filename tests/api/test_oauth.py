"""Service clients, client credentials, introspection (RFC 7662) and revocation (RFC 7009)."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import jwt
import pytest

from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, MakeUser


async def register_client(
    client: httpx.AsyncClient, admin: dict[str, str], permissions: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/clients", headers=admin, json={"name": "orders", "permissions": permissions or []}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def user_tokens(client: httpx.AsyncClient, make_user: MakeUser) -> dict[str, Any]:
    await make_user("person@example.com")
    return await sign_in(client)


async def sign_in(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "person@example.com", "password": PASSWORD},
    )
    tokens: dict[str, Any] = response.json()
    return tokens


async def test_register_list_delete_clients(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await register_client(client, admin_headers, ["users:read"])
    assert created["id"].startswith("svc-") and len(created["client_secret"]) >= 43
    listed = (await client.get("/clients", headers=admin_headers)).json()
    assert [c["id"] for c in listed] == [created["id"]]
    assert "client_secret" not in listed[0]
    deleted = await client.delete(f"/clients/{created['id']}", headers=admin_headers)
    assert deleted.status_code == 204
    missing = await client.delete(f"/clients/{created['id']}", headers=admin_headers)
    assert missing.status_code == 404
    bad = await client.post(
        "/clients", headers=admin_headers, json={"name": "x", "permissions": ["nope"]}
    )
    assert bad.status_code == 422
    unknown = await client.post(
        "/clients", headers=admin_headers, json={"name": "x", "permissions": ["orders:ship"]}
    )
    assert unknown.status_code == 404


async def test_client_credentials_grant(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await register_client(client, admin_headers, ["users:read"])
    for kwargs in (
        {"headers": basic(created["id"], created["client_secret"])},
        {"data": {"client_id": created["id"], "client_secret": created["client_secret"]}},
    ):
        data = {"grant_type": "client_credentials", **kwargs.pop("data", {})}
        response = await client.post("/auth/token", data=data, **kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "refresh_token" not in body
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["sub"] == claims["client_id"] == created["id"]
        assert claims["permissions"] == ["users:read"] and "sid" not in claims


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
    ],
)
async def test_bad_client_authentication(
    client: httpx.AsyncClient, admin_headers: dict[str, str], headers: dict[str, str]
) -> None:
    response = await client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_wrong_secret_and_unknown_client(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await register_client(client, admin_headers)
    for client_id, secret in ((created["id"], "wrong"), ("svc-unknown", "whatever")):
        response = await client.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            headers=basic(client_id, secret),
        )
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"


async def test_introspection(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    make_user: MakeUser,
    services: AppServices,
) -> None:
    created = await register_client(client, admin_headers)
    auth = basic(created["id"], created["client_secret"])
    tokens = await user_tokens(client, make_user)

    async def introspect(token: str) -> dict[str, Any]:
        response = await client.post("/auth/introspect", data={"token": token}, headers=auth)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        result: dict[str, Any] = response.json()
        return result

    active = await introspect(tokens["access_token"])
    assert active["active"] is True and active["token_type"] == "access_token"
    assert active["aud"] == "authsvc" and "sid" in active
    refresh = await introspect(tokens["refresh_token"])
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"

    expired = services.codec.issue(active["sub"], now=time.time() - 3600).token
    for dead in ("", "garbage", expired, tokens["access_token"][:-3] + "abc"):
        assert await introspect(dead) == {"active": False}

    # Revocation is visible at once.
    assert (await client.post("/auth/logout", headers={
        "Authorization": f"Bearer {tokens['access_token']}"})).status_code == 204  # fmt: skip
    assert await introspect(tokens["access_token"]) == {"active": False}
    assert await introspect(tokens["refresh_token"]) == {"active": False}

    unauthenticated = await client.post("/auth/introspect", data={"token": "x"})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"] == "invalid_client"


async def test_service_tokens_introspect_until_the_client_is_deleted(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await register_client(client, admin_headers)
    auth = basic(created["id"], created["client_secret"])
    token = (
        await client.post("/auth/token", data={"grant_type": "client_credentials"}, headers=auth)
    ).json()["access_token"]
    other = await register_client(client, admin_headers)
    other_auth = basic(other["id"], other["client_secret"])
    seen = await client.post("/auth/introspect", data={"token": token}, headers=other_auth)
    assert seen.json()["active"] is True
    await client.delete(f"/clients/{created['id']}", headers=admin_headers)
    gone = await client.post("/auth/introspect", data={"token": token}, headers=other_auth)
    assert gone.json() == {"active": False}


async def test_revocation(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    tokens = await user_tokens(client, make_user)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    # Unknown tokens: 200 too (RFC 7009 §2.2).
    assert (await client.post("/auth/revoke", data={"token": "nothing"})).status_code == 200
    revoked = await client.post("/auth/revoke", data={"token": tokens["refresh_token"]})
    assert revoked.status_code == 200
    assert (await client.get("/users/me", headers=bearer)).status_code == 401
    again = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert again.status_code == 400

    second = await sign_in(client)
    by_access = await client.post("/auth/revoke", data={"token": second["access_token"]})
    assert by_access.status_code == 200
    me = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {second['access_token']}"}
    )
    assert me.status_code == 401
    wrong = await client.post(
        "/auth/revoke", data={"token": "x"}, headers=basic("svc-unknown", "nope")
    )
    assert wrong.status_code == 401


async def test_clients_need_permissions_and_cannot_escalate(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    tokens = await user_tokens(client, make_user)
    plain = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.get("/clients", headers=plain)).status_code == 403
    assert (await client.post("/clients", headers=plain, json={"name": "x"})).status_code == 403


async def test_client_permissions_follow_the_no_escalation_rule(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    from tests.conftest import PASSWORD as PW

    role = await client.post(
        "/roles",
        headers=admin_headers,
        json={"name": "clientmgr", "permissions": ["clients:write"]},
    )
    assert role.status_code == 201
    user = await make_user("cm@example.com")
    assert (
        await client.put(f"/users/{user.id}/roles/clientmgr", headers=admin_headers)
    ).status_code == 204
    token = (
        await client.post(
            "/auth/token",
            data={"grant_type": "password", "username": "cm@example.com", "password": PW},
        )
    ).json()["access_token"]
    manager = {"Authorization": f"Bearer {token}"}
    refused = await client.post(
        "/clients", headers=manager, json={"name": "x", "permissions": ["users:delete"]}
    )
    assert refused.status_code == 403 and refused.json()["detail"]["code"] == "PERMISSION_DENIED"
    # Another service's permission is a power too: only its holders give it (issue 11).
    await client.post("/permissions", headers=admin_headers, json={"name": "orders:ship"})
    refused = await client.post(
        "/clients", headers=manager, json={"name": "x", "permissions": ["orders:ship"]}
    )
    assert refused.status_code == 403 and refused.json()["detail"]["missing"] == ["orders:ship"]
    allowed = await client.post(
        "/clients", headers=manager, json={"name": "x", "permissions": ["clients:write"]}
    )
    assert allowed.status_code == 201
