"""``/users/me`` (self-service) and the superuser routes, including ``GET /users``."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text, update

from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.db.repositories.users import UserDatabase, UserFilter, list_users
from authsvc.schemas.users import AdminUserUpdate
from authsvc.services.admin import UserAdminService
from authsvc.services.container import AppServices
from authsvc.services.users import UserManager
from tests.conftest import PASSWORD, Login, MakeUser

NEW_PASSWORD = "a different long passphrase"


async def test_me_requires_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/users/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_patch_me_asks_for_an_email_change(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("me@example.com")
    headers = await login("me@example.com")
    response = await client.patch(
        "/users/me",
        headers=headers,
        json={"email": "me2@example.com", "current_password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    # Pending until the link sent there confirms it: tests/api/test_email_change.py.
    assert response.json()["email"] == "me@example.com"
    assert response.json()["pending_email"] == "me2@example.com"


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


# These sign in as an unverified account (AUTHSVC_REQUIRE_VERIFIED_EMAIL is on by default).
@pytest.mark.parametrize("settings_overrides", [{"require_verified_email": False}])
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
    response = await client.patch(
        "/users/me",
        headers=headers,
        json={"email": "FIRST@example.com", "current_password": PASSWORD},
    )
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "UPDATE_USER_EMAIL_ALREADY_EXISTS"


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


# These sign in as an unverified account (AUTHSVC_REQUIRE_VERIFIED_EMAIL is on by default).
@pytest.mark.parametrize("settings_overrides", [{"require_verified_email": False}])
async def test_admin_reads_updates_and_deletes_a_user(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    admin_headers: dict[str, str],
    mfa_admin_headers: dict[str, str],
    login: Login,
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

    deleted = await client.delete(f"/users/{user.id}", headers=mfa_admin_headers)
    assert deleted.status_code == 204
    assert (await client.get(f"/users/{user.id}", headers=admin_headers)).status_code == 404
    assert (await client.get("/users/me", headers=their_token)).status_code == 401


async def test_a_superuser_change_makes_tokens_stale_after_a_concurrent_version_bump(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    admin_headers: dict[str, str],
    login: Login,
    services: AppServices,
) -> None:
    """Demoting a superuser must stale the tokens they hold, including one issued after the
    account was read: the version is bumped in the database, not written back as read + 1."""
    target = await make_user("boss@example.com", is_superuser=True)
    created = await client.post("/roles", headers=admin_headers, json={"name": "staff"})
    assert created.status_code == 201, created.text
    admin = Principal(user_id=uuid.uuid4(), email="robot@example.com", is_superuser=True)
    async with services.sessionmaker() as db:
        account = await db.get(User, target.id)  # the admin change reads the account ...
        assert account is not None
        # ... meanwhile a role is assigned (the version moves on) and they sign in again:
        assigned = await client.put(f"/users/{target.id}/roles/staff", headers=admin_headers)
        assert assigned.status_code == 204, assigned.text
        token = await login("boss@example.com")  # claims superuser, at the newest version
        manager = UserManager(
            UserDatabase(db, User),
            hasher=services.hasher,
            policy=services.policy,
            notifier=services.notifier,
            token_secret=services.token_secret,
            verify_lifetime=60,
            reset_lifetime=60,
            public_url=None,
            session=db,
        )
        service = UserAdminService(db, admin, None, manager=manager)
        demoted = await service.update(account, AdminUserUpdate(is_superuser=False))
        assert demoted.is_superuser is False
    refused = await client.get("/users/me/sessions", headers=token)
    assert refused.status_code == 401, refused.text
    assert refused.json()["detail"]["code"] == "TOKEN_STALE"


async def test_admin_routes_unknown_and_malformed_ids(
    client: httpx.AsyncClient, admin_headers: dict[str, str], mfa_admin_headers: dict[str, str]
) -> None:
    missing = uuid.uuid4()
    assert (await client.get(f"/users/{missing}", headers=admin_headers)).status_code == 404
    assert (await client.delete(f"/users/{missing}", headers=mfa_admin_headers)).status_code == 404
    # A user id is a UUID in the route itself: anything else names no resource.
    malformed = await client.get("/users/not-a-uuid", headers=admin_headers)
    assert malformed.status_code == 404
    assert malformed.json()["detail"]["code"] == "NOT_FOUND"


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

    everyone = (await client.get("/users?include_total=true", headers=admin_headers)).json()
    assert everyone["total"] == 8  # with the admin
    assert everyone["limit"] == 50 and everyone["offset"] == 0
    assert everyone["next_cursor"] is None
    # Counting is opt-in: a count of every matching row on each page is slow at scale.
    assert (await client.get("/users", headers=admin_headers)).json()["total"] is None

    page1 = (
        await client.get("/users?limit=2&offset=0&include_total=true", headers=admin_headers)
    ).json()
    page2 = (
        await client.get("/users?limit=2&offset=2&include_total=true", headers=admin_headers)
    ).json()
    assert len(page1["items"]) == 2 and len(page2["items"]) == 2
    assert page1["total"] == page2["total"] == 8
    assert not {u["id"] for u in page1["items"]} & {u["id"] for u in page2["items"]}

    alices = (
        await client.get("/users?email_prefix=ALICE&include_total=true", headers=admin_headers)
    ).json()
    assert alices["total"] == 5
    assert all(u["email"].startswith("alice") for u in alices["items"])

    underscore = (await client.get("/users?email_prefix=al_", headers=admin_headers)).json()
    assert [u["email"] for u in underscore["items"]] == ["al_x@example.com"]

    verified_alices = (
        await client.get(
            "/users?email_prefix=alice&is_verified=true&include_total=true", headers=admin_headers
        )
    ).json()
    assert verified_alices["total"] == 3

    inactive = (await client.get("/users?is_active=false", headers=admin_headers)).json()
    assert [u["email"] for u in inactive["items"]] == ["bob@example.com"]


async def test_list_users_rejects_bad_query(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for query in (
        "limit=0", "limit=201", "offset=-1", "limit=abc", "is_active=maybe", "email_prefix=a%00b"
    ):  # fmt: skip
        response = await client.get(f"/users?{query}", headers=admin_headers)
        assert response.status_code == 422, query
        assert response.json()["detail"]["code"] == "VALIDATION_ERROR"


async def _walk(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, limit: int
) -> tuple[list[str], int]:
    """Follow next_cursor from the first page to the last: the emails seen, and pages read."""
    emails: list[str] = []
    cursor: str | None = None
    for pages in range(1, 50):
        url = f"/users?limit={limit}&{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        emails += [user["email"] for user in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return emails, pages
        assert len(body["items"]) == limit  # only the last page may be short
    raise AssertionError("the cursor never ran out")


async def _set_created_at(services: AppServices, at: dict[str, datetime]) -> None:
    columns = User.__table__.c
    async with services.sessionmaker() as session:
        for email, created_at in at.items():
            await session.execute(
                update(User).where(columns.email == email).values(created_at=created_at)
            )
        await session.commit()


async def test_list_users_cursor_walk_returns_everyone_once_in_order(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    admin_headers: dict[str, str],
    mfa_admin_headers: dict[str, str],
    services: AppServices,
) -> None:
    users = [
        await make_user(f"walk{i:02d}@example.com", is_verified=i % 3 != 0, is_active=i != 7)
        for i in range(11)
    ]
    # Created in the opposite order of their addresses, and four at the very same instant, so
    # pages of 3 end inside the tie: only the id decides there.
    base = datetime(2024, 1, 1, tzinfo=UTC)
    created = {
        user.email: base + timedelta(minutes=0 if 3 <= i <= 6 else 20 - i)
        for i, user in enumerate(users)
    }
    await _set_created_at(services, created)
    by_key = sorted(users, key=lambda user: (created[user.email], user.id))
    in_order = [user.email for user in by_key]
    assert in_order != sorted(in_order)

    # Everyone, the admin (created now) last; 12 users, pages of 3: the full last page says
    # there is no next one.
    emails, pages = await _walk(client, admin_headers, "", 3)
    assert emails == [*in_order, "admin@example.com"]
    assert pages == 4

    for query, keep in [
        ("email_prefix=WALK", lambda i: True),
        ("email_prefix=walk&is_verified=true", lambda i: i % 3 != 0),
        ("is_verified=false&is_active=true", lambda i: i % 3 == 0 and i != 7),
        ("email_prefix=walk0", lambda i: i < 10),
    ]:
        wanted = [u.email for u in by_key if keep(int(u.email[4:6]))]
        for limit in (1, 2, 5, 200):
            emails, _ = await _walk(client, admin_headers, query, limit)
            assert emails == wanted, (query, limit)

    inactive = (await client.get("/users?is_active=false", headers=admin_headers)).json()
    assert [u["email"] for u in inactive["items"]] == ["walk07@example.com"]
    assert inactive["next_cursor"] is None

    # Rows removed before the cursor shift nothing (an offset would skip a user here).
    first = (await client.get("/users?limit=3&email_prefix=walk", headers=admin_headers)).json()
    for user in first["items"]:
        deleted = await client.delete(f"/users/{user['id']}", headers=mfa_admin_headers)
        assert deleted.status_code == 204
    rest = (
        await client.get(
            f"/users?limit=50&email_prefix=walk&cursor={first['next_cursor']}",
            headers=admin_headers,
        )
    ).json()
    assert [u["email"] for u in rest["items"]] == in_order[3:]


async def test_list_users_offset_pages_hand_out_a_cursor_too(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    for i in range(4):
        await make_user(f"off{i}@example.com")
    by_offset = (
        await client.get("/users?limit=2&offset=1&email_prefix=off", headers=admin_headers)
    ).json()
    assert [u["email"] for u in by_offset["items"]] == ["off1@example.com", "off2@example.com"]
    after = (
        await client.get(
            f"/users?limit=2&email_prefix=off&cursor={by_offset['next_cursor']}",
            headers=admin_headers,
        )
    ).json()
    assert [u["email"] for u in after["items"]] == ["off3@example.com"]
    assert after["next_cursor"] is None and after["offset"] == 0
    # Past the end: an empty page, no cursor.
    empty = (await client.get("/users?offset=100", headers=admin_headers)).json()
    assert empty["items"] == [] and empty["next_cursor"] is None


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


async def test_list_users_refuses_malformed_cursors(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    await make_user("c1@example.com")
    good = (await client.get("/users?limit=1", headers=admin_headers)).json()["next_cursor"]
    assert good
    hex_id = uuid.uuid4().hex
    malformed = [
        "not a cursor",
        "!!!!",
        good + "=",  # padding: not the spelling we hand out
        good + "A",
        good[:-2],
        "A" * 300,
        _b64("u1:123"),
        _b64(f"u1:abc:{hex_id}"),
        _b64(f"u1:+5:{hex_id}"),  # int() would take it; not canonical
        _b64(f"u1:1_000:{hex_id}"),
        _b64(f"u1:99999999999999999999999:{hex_id}"),  # past year 9999
        _b64(f"u1:-99999999999999999999999:{hex_id}"),
        _b64("u1:5:not-a-uuid"),
        _b64(f"u1:5:{uuid.UUID(hex_id)}"),  # hyphenated: not canonical
        _b64(f"u2:5:{hex_id}"),
        _b64(f"u1:5:{hex_id}:x"),
        base64.urlsafe_b64encode(b"\xff\xfe:5:" + hex_id.encode()).decode().rstrip("="),
    ]
    for cursor in malformed:
        response = await client.get("/users", params={"cursor": cursor}, headers=admin_headers)
        assert response.status_code == 422, cursor
        assert response.json()["detail"]["code"] == "USER_CURSOR_INVALID", cursor
    # An empty cursor is refused by the parameter's schema (minLength 1) already.
    empty = await client.get("/users", params={"cursor": ""}, headers=admin_headers)
    assert empty.status_code == 422
    assert empty.json()["detail"]["code"] == "VALIDATION_ERROR"
    # A well-formed cursor for a position nobody holds is just a position: a page after it.
    far = _b64(f"u1:0:{hex_id}")
    response = await client.get("/users", params={"cursor": far}, headers=admin_headers)
    assert response.status_code == 200
    assert len(response.json()["items"]) == 2


async def test_list_users_refuses_cursor_with_offset(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: dict[str, str]
) -> None:
    await make_user("c1@example.com")
    cursor = (await client.get("/users?limit=1", headers=admin_headers)).json()["next_cursor"]
    both = await client.get("/users", params={"cursor": cursor, "offset": 1}, headers=admin_headers)
    assert both.status_code == 422
    assert both.json()["detail"]["code"] == "USER_CURSOR_WITH_OFFSET"
    zero = await client.get("/users", params={"cursor": cursor, "offset": 0}, headers=admin_headers)
    assert zero.status_code == 200
    assert [u["email"] for u in zero.json()["items"]] == ["c1@example.com"]


async def test_prefix_search_is_planned_afresh_on_postgresql(services: AppServices) -> None:
    """A generic plan of the prepared search cannot use the prefix index (see list_users)."""
    async with services.sessionmaker() as session:
        if session.get_bind().dialect.name != "postgresql":
            pytest.skip("PostgreSQL's plan cache")
        await list_users(session, UserFilter(is_active=True), limit=1)
        assert await session.scalar(text("SHOW plan_cache_mode")) == "auto"
        await list_users(session, UserFilter(email_prefix="a"), limit=1)
        assert await session.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
        await session.rollback()  # SET LOCAL: the request's transaction only
        assert await session.scalar(text("SHOW plan_cache_mode")) == "auto"
