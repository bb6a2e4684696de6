"""``/users/me`` (self-service) and the superuser routes, including ``GET /users``."""

from __future__ import annotations

import uuid

import httpx

from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser

NEW_PASSWORD = "a different long passphrase"


async def test_me_requires_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/users/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_patch_me_changes_email(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("me@example.com")
    headers = await login("me@example.com")
    response = await client.patch("/users/me", headers=headers, json={"email": "me2@example.com"})
    assert response.status_code == 200, response.text
    assert response.json()["email"] == "me2@example.com"


async def test_patch_me_password_needs_the_current_password(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("pw@example.com")
    headers = await login("pw@example.com")

    missing = await client.patch("/users/me", headers=headers, json={"password": NEW_PASSWORD})
    assert missing.status_code == 401
    assert missing.json()["detail"]["code"] == "CURRENT_PASSWORD_INVALID"

    wrong = await client.patch(
        "/users/me",
        headers=headers,
        json={"password": NEW_PASSWORD, "current_password": "not my password"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["detail"]["code"] == "CURRENT_PASSWORD_INVALID"
    # Still the old password.
    await login("pw@example.com")

    ok = await client.patch(
        "/users/me",
        headers=headers,
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
    )
    assert ok.status_code == 200, ok.text
    await login("pw@example.com", NEW_PASSWORD)
    old = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "pw@example.com", "password": PASSWORD},
    )
    assert old.status_code == 400


async def test_patch_me_new_password_follows_the_policy(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("policy@example.com")
    headers = await login("policy@example.com")
    response = await client.patch(
        "/users/me", headers=headers, json={"password": "password", "current_password": PASSWORD}
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "UPDATE_USER_INVALID_PASSWORD"


async def test_patch_me_can_never_grant_privileges(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    user = await make_user("plain@example.com", is_verified=False)
    headers = await login("plain@example.com")
    for field in ("is_superuser", "is_active", "is_verified"):
        response = await client.patch("/users/me", headers=headers, json={field: True})
        assert response.status_code == 422, field
        assert response.json()["detail"]["code"] == "USER_FIELD_READ_ONLY"
    me = (await client.get("/users/me", headers=headers)).json()
    assert me["id"] == str(user.id)
    assert (me["is_superuser"], me["is_verified"]) == (False, False)


async def test_patch_me_rejects_unknown_fields(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("unknown@example.com")
    headers = await login("unknown@example.com")
    response = await client.patch("/users/me", headers=headers, json={"role": "admin"})
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "VALIDATION_ERROR"


async def test_patch_me_to_a_taken_email_is_refused(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("first@example.com")
    await make_user("second@example.com")
    headers = await login("second@example.com")
    response = await client.patch("/users/me", headers=headers, json={"email": "FIRST@example.com"})
    assert response.status_code == 400
    assert response.json()["detail"] == "UPDATE_USER_EMAIL_ALREADY_EXISTS"


async def test_superuser_routes_are_refused_to_plain_users(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    other = await make_user("other@example.com")
    await make_user("plain@example.com")
    headers = await login("plain@example.com")
    assert (await client.get("/users", headers=headers)).status_code == 403
    assert (await client.get(f"/users/{other.id}", headers=headers)).status_code == 403
    patch = await client.patch(f"/users/{other.id}", headers=headers, json={"is_active": False})
    assert patch.status_code == 403
    assert (await client.delete(f"/users/{other.id}", headers=headers)).status_code == 403
    assert (await client.get("/users")).status_code == 401


async def test_admin_reads_updates_and_deletes_a_user(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str], login: Login
) -> None:
    user = await make_user("target@example.com", is_verified=False)
    their_token = await login("target@example.com")
    got = await client.get(f"/users/{user.id}", headers=admin_headers)
    assert got.status_code == 200
    assert got.json()["email"] == "target@example.com"

    patched = await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"is_verified": True, "is_active": False}
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["is_verified"], patched.json()["is_active"]) == (True, False)
    # Deactivated: the token they already hold stops working at once.
    assert (await client.get("/users/me", headers=their_token)).status_code == 401

    deleted = await client.delete(f"/users/{user.id}", headers=admin_headers)
    assert deleted.status_code == 204
    assert (await client.get(f"/users/{user.id}", headers=admin_headers)).status_code == 404
    assert (await client.get("/users/me", headers=their_token)).status_code == 401


async def test_admin_routes_unknown_and_malformed_ids(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    missing = uuid.uuid4()
    assert (await client.get(f"/users/{missing}", headers=admin_headers)).status_code == 404
    assert (await client.delete(f"/users/{missing}", headers=admin_headers)).status_code == 404
    malformed = await client.get("/users/not-a-uuid", headers=admin_headers)
    assert malformed.status_code == 422
    assert malformed.json()["detail"]["code"] == "VALIDATION_ERROR"


async def test_list_users_paginates_filters_and_counts(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    admin_headers: dict[str, str],
    services: AppServices,
) -> None:
    for i in range(5):
        await make_user(f"alice{i}@example.com", is_verified=i % 2 == 0)
    await make_user("bob@example.com", is_active=False)
    await make_user("al_x@example.com")  # "_" must not act as a LIKE wildcard

    everyone = (await client.get("/users", headers=admin_headers)).json()
    assert everyone["total"] == 8  # with the admin
    assert everyone["limit"] == 50 and everyone["offset"] == 0

    page1 = (await client.get("/users?limit=2&offset=0", headers=admin_headers)).json()
    page2 = (await client.get("/users?limit=2&offset=2", headers=admin_headers)).json()
    assert len(page1["items"]) == 2 and len(page2["items"]) == 2
    assert page1["total"] == page2["total"] == 8
    assert not {u["id"] for u in page1["items"]} & {u["id"] for u in page2["items"]}

    alices = (await client.get("/users?email_prefix=ALICE", headers=admin_headers)).json()
    assert alices["total"] == 5
    assert all(u["email"].startswith("alice") for u in alices["items"])

    underscore = (await client.get("/users?email_prefix=al_", headers=admin_headers)).json()
    assert [u["email"] for u in underscore["items"]] == ["al_x@example.com"]

    verified_alices = (
        await client.get("/users?email_prefix=alice&is_verified=true", headers=admin_headers)
    ).json()
    assert verified_alices["total"] == 3

    inactive = (await client.get("/users?is_active=false", headers=admin_headers)).json()
    assert [u["email"] for u in inactive["items"]] == ["bob@example.com"]


async def test_list_users_rejects_bad_query(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for query in ("limit=0", "limit=201", "offset=-1", "limit=abc", "is_active=maybe"):
        response = await client.get(f"/users?{query}", headers=admin_headers)
        assert response.status_code == 422, query
        assert response.json()["detail"]["code"] == "VALIDATION_ERROR"
