"""Roles, permissions, assignments, guards, freshness, last-admin protection, audit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest

from authsvc.db.models import User
from authsvc.db.repositories import roles as repo
from authsvc.services.container import AppServices
from tests.conftest import Login, MakeUser, MfaLogin, delivered, token_from_console

Headers = dict[str, str]
Assign = Callable[[User, str], Awaitable[None]]


@pytest.fixture
def assign(services: AppServices) -> Assign:
    async def do_assign(user: User, role: str) -> None:
        async with services.sessionmaker() as session:
            found = await repo.get_role(session, role)
            assert found is not None, role
            await repo.assign(session, user.id, found.id)
            await session.commit()

    return do_assign


@pytest.fixture
async def admin(make_user: MakeUser, assign: Assign, mfa_login: MfaLogin) -> Headers:
    """An administrator by role (not a superuser), signed in with a second factor: the admin
    role counts only then (AUTHSVC_MFA_REQUIRED_ROLES, tests/api/test_mfa_policies.py)."""
    user = await make_user("roleadmin@example.com")
    await assign(user, "admin")
    return await mfa_login("roleadmin@example.com")


async def make_role(
    client: httpx.AsyncClient, headers: Headers, name: str, **body: object
) -> dict[str, object]:
    response = await client.post("/roles", headers=headers, json={"name": name, **body})
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


def detail(response: httpx.Response) -> dict[str, object]:
    result: dict[str, object] = response.json()["detail"]
    return result


# --- seeded state and tokens ---------------------------------------------------------------


async def test_seeded_roles_and_permissions(client: httpx.AsyncClient, admin: Headers) -> None:
    roles = (await client.get("/roles", headers=admin)).json()
    assert {r["name"] for r in roles["items"]} == {"admin", "user"}
    admin_role = (await client.get("/roles/admin", headers=admin)).json()
    assert set(admin_role["permissions"]) == {
        "users:read", "users:write", "users:delete", "roles:read", "roles:write",
        "permissions:read", "permissions:write", "audit:read", "clients:read", "clients:write",
        "keys:read", "keys:write", "authz:check", "policies:read", "policies:write",
    }  # fmt: skip
    permissions = (await client.get("/permissions", headers=admin)).json()
    assert permissions["total"] == 15
    assert all(p["builtin"] for p in permissions["items"])


async def test_registration_gets_the_default_role_and_tokens_carry_claims(
    client: httpx.AsyncClient,
    login: Login,
    admin: Headers,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
) -> None:
    created = await client.post(
        "/auth/register", json={"email": "fresh@example.com", "password": "a long passphrase"}
    )
    assert created.status_code == 202
    token = token_from_console(await delivered(services, capsys), "verify")
    verified = await client.post("/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    user_id = verified.json()["id"]
    roles = (await client.get(f"/users/{user_id}/roles", headers=admin)).json()
    assert roles == {"user_id": user_id, "roles": ["user"]}
    # AUTHSVC_REQUIRE_VERIFIED_EMAIL is on by default: the address must be verified first.
    verified = await client.patch(f"/users/{user_id}", headers=admin, json={"is_verified": True})
    assert verified.status_code == 200

    token = (await login("fresh@example.com", "a long passphrase"))["Authorization"][7:]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["roles"] == ["user"]
    assert claims["permissions"] == []
    assert claims["ver"] == 0

    admin_claims = jwt.decode(admin["Authorization"][7:], options={"verify_signature": False})
    assert admin_claims["roles"] == ["admin"]
    assert "roles:write" in admin_claims["permissions"]


async def test_superuser_token_holds_everything(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    claims = jwt.decode(admin_headers["Authorization"][7:], options={"verify_signature": False})
    assert claims["permissions"] == ["*"]
    assert (await client.get("/audit", headers=admin_headers)).status_code == 200


# --- guards --------------------------------------------------------------------------------


async def test_guards_401_403_200(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, admin: Headers
) -> None:
    assert detail(await client.get("/roles"))["code"] == "NOT_AUTHENTICATED"
    bad = await client.get("/roles", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and detail(bad)["code"] == "TOKEN_INVALID"
    assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    await make_user("plain@example.com")
    plain = await login("plain@example.com")
    denied = await client.get("/roles", headers=plain)
    assert denied.status_code == 403
    assert detail(denied) == {
        "code": "PERMISSION_DENIED",
        "message": "Permission 'roles:read' is required.",
        "missing": ["roles:read"],
    }
    for method, path in [
        ("GET", "/users"),
        ("GET", "/permissions"),
        ("GET", "/audit"),
        ("POST", "/permissions"),
        ("DELETE", f"/users/{uuid.uuid4()}"),
    ]:
        response = await client.request(method, path, headers=plain)
        assert response.status_code == 403, (method, path)
    assert (await client.get("/roles", headers=admin)).status_code == 200


async def test_grant_then_revoke_and_old_tokens_go_stale(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, admin: Headers, assign: Assign
) -> None:
    reader = await make_user("reader@example.com")
    await make_role(client, admin, "auditor", permissions=["audit:read"])
    before = await login("reader@example.com")
    assert (await client.get("/audit", headers=before)).status_code == 403

    assigned = await client.put(f"/users/{reader.id}/roles/auditor", headers=admin)
    assert assigned.status_code == 204
    stale = await client.get("/audit", headers=before)
    assert stale.status_code == 401 and detail(stale)["code"] == "TOKEN_STALE"
    fresh = await login("reader@example.com")
    assert (await client.get("/audit", headers=fresh)).status_code == 200

    # Taking the permission from the role makes the token issued with it stale too.
    revoked = await client.delete("/roles/auditor/permissions/audit:read", headers=admin)
    assert revoked.status_code == 204
    assert detail(await client.get("/audit", headers=fresh))["code"] == "TOKEN_STALE"
    newest = await login("reader@example.com")
    assert (await client.get("/audit", headers=newest)).status_code == 403
    # One rule set: /users/me needs no permission, yet refuses the stale token like every
    # guarded route (it used to answer 200 through fastapi-users' own authentication).
    stale_me = await client.get("/users/me", headers=fresh)
    assert stale_me.status_code == 401 and detail(stale_me)["code"] == "TOKEN_STALE"
    assert (await client.get("/users/me", headers=newest)).status_code == 200


async def test_unrelated_users_keep_their_tokens(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, admin: Headers, assign: Assign
) -> None:
    bystander = await make_user("bystander@example.com")
    await make_role(client, admin, "readers", permissions=["users:read"])
    await make_role(client, admin, "writers", permissions=["users:write"])
    await assign(bystander, "readers")
    token = await login("bystander@example.com")
    await client.put("/roles/writers/permissions/audit:read", headers=admin)
    assert (await client.get("/users", headers=token)).status_code == 200


async def test_composite_roles_and_wildcards(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    mfa_login: MfaLogin,
    admin: Headers,
    assign: Assign,
) -> None:
    await make_role(client, admin, "viewer", permissions=["users:read"])
    await make_role(client, admin, "editor", parents=["viewer"], permissions=["users:write"])
    await make_role(client, admin, "chief", parents=["editor"])
    chief = await make_user("chief@example.com")
    await assign(chief, "chief")

    effective = (await client.get(f"/users/{chief.id}/permissions", headers=admin)).json()
    assert effective["permissions"] == [
        {"name": "users:read", "granted_by": ["chief"]},
        {"name": "users:write", "granted_by": ["chief"]},
    ]
    headers = await login("chief@example.com")
    claims = jwt.decode(headers["Authorization"][7:], options={"verify_signature": False})
    assert claims["roles"] == ["chief", "editor", "viewer"]
    assert (await client.get("/users", headers=headers)).status_code == 200
    assert (await client.delete(f"/users/{chief.id}", headers=headers)).status_code == 403

    wildcard = await client.put("/roles/chief/permissions/users:*", headers=admin)
    assert wildcard.status_code == 204
    headers = await mfa_login("chief@example.com")  # deleting needs a second factor
    other = await make_user("other@example.com")
    assert (await client.delete(f"/users/{other.id}", headers=headers)).status_code == 204
    unknown_resource = await client.put("/roles/chief/permissions/nothing:*", headers=admin)
    assert unknown_resource.status_code == 404


# --- role CRUD and bad input ----------------------------------------------------------------


async def test_renaming_a_role_makes_its_holders_tokens_stale(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, admin: Headers, assign: Assign
) -> None:
    await make_role(client, admin, "readers", permissions=["users:read"])
    await make_role(client, admin, "rename-me")
    holder = await make_user("holder@example.com")
    await assign(holder, "readers")
    await make_role(client, admin, "child", parents=["readers"])
    token = await login("holder@example.com")
    assert (
        await client.patch("/roles/readers", headers=admin, json={"name": "viewers"})
    ).status_code == 200
    assert detail(await client.get("/users", headers=token))["code"] == "TOKEN_STALE"
    fresh = await login("holder@example.com")
    claims = jwt.decode(fresh["Authorization"][7:], options={"verify_signature": False})
    assert claims["roles"] == ["viewers"]
    # A role nobody holds can be renamed without disturbing anyone.
    await client.patch("/roles/rename-me", headers=admin, json={"name": "renamed"})
    assert (await client.get("/users", headers=fresh)).status_code == 200


async def test_role_crud(client: httpx.AsyncClient, admin: Headers) -> None:
    created = await make_role(
        client, admin, "support", description="Helpdesk", permissions=["users:read"]
    )
    by_id = (await client.get(f"/roles/{created['id']}", headers=admin)).json()
    by_name = (await client.get("/roles/support", headers=admin)).json()
    assert by_id == by_name
    assert by_id["permissions"] == ["users:read"] and by_id["parents"] == []

    patched = await client.patch(
        "/roles/support", headers=admin, json={"name": "helpdesk", "description": "Tier 1"}
    )
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["description"]) == ("helpdesk", "Tier 1")
    assert (await client.get("/roles/support", headers=admin)).status_code == 404

    page = (await client.get("/roles?limit=1&offset=0", headers=admin)).json()
    assert page["total"] == 3 and len(page["items"]) == 1
    taken = await client.patch("/roles/helpdesk", headers=admin, json={"name": "admin"})
    assert taken.status_code == 409 and detail(taken)["code"] == "ROLE_EXISTS"
    assert (await client.get("/roles/helpdesk", headers=admin)).json()["description"] == "Tier 1"

    assert (await client.delete("/roles/helpdesk", headers=admin)).status_code == 204
    assert (await client.get("/roles/helpdesk", headers=admin)).status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "admin"}, 409, "ROLE_EXISTS"),
        ({"name": "Bad Name"}, 422, "VALIDATION_ERROR"),
        ({"name": "x" * 65}, 422, "VALIDATION_ERROR"),
        ({"name": "ok", "parents": ["ghost"]}, 404, "ROLE_NOT_FOUND"),
        ({"name": "ok", "permissions": ["ghost:read"]}, 404, "PERMISSION_NOT_FOUND"),
        ({"name": "ok", "permissions": ["NotAPermission"]}, 422, "VALIDATION_ERROR"),
        ({"name": "ok", "colour": "red"}, 422, "VALIDATION_ERROR"),
    ],
)
async def test_create_role_bad_input(
    client: httpx.AsyncClient, admin: Headers, body: dict[str, object], status: int, code: str
) -> None:
    response = await client.post("/roles", headers=admin, json=body)
    assert response.status_code == status, response.text
    assert detail(response)["code"] == code
    names = {r["name"] for r in (await client.get("/roles", headers=admin)).json()["items"]}
    assert names == {"admin", "user"}  # nothing half-written


async def test_cycles_are_refused(client: httpx.AsyncClient, admin: Headers) -> None:
    await make_role(client, admin, "a")
    await make_role(client, admin, "b", parents=["a"])
    await make_role(client, admin, "c", parents=["b"])
    for role, parents in (("a", ["c"]), ("a", ["b"]), ("b", ["b"])):
        response = await client.patch(f"/roles/{role}", headers=admin, json={"parents": parents})
        assert response.status_code == 409, (role, parents)
        assert detail(response)["code"] == "ROLE_CYCLE"
    assert (await client.get("/roles/a", headers=admin)).json()["parents"] == []


async def test_delete_role_in_use_needs_force(
    client: httpx.AsyncClient, make_user: MakeUser, admin: Headers, assign: Assign
) -> None:
    await make_role(client, admin, "temp")
    user = await make_user("temp@example.com")
    await assign(user, "temp")
    in_use = await client.delete("/roles/temp", headers=admin)
    assert in_use.status_code == 409 and detail(in_use)["code"] == "ROLE_IN_USE"
    assert (await client.delete("/roles/temp?force=true", headers=admin)).status_code == 204
    assert (await client.get(f"/users/{user.id}/roles", headers=admin)).json()["roles"] == []


async def test_protected_roles(client: httpx.AsyncClient, admin: Headers) -> None:
    for role in ("admin", "user"):
        deleted = await client.delete(f"/roles/{role}?force=true", headers=admin)
        assert deleted.status_code == 409 and detail(deleted)["code"] == "ROLE_PROTECTED"
        renamed = await client.patch(f"/roles/{role}", headers=admin, json={"name": "x"})
        assert renamed.status_code == 409 and detail(renamed)["code"] == "ROLE_PROTECTED"
    revoked = await client.delete("/roles/admin/permissions/roles:write", headers=admin)
    assert revoked.status_code == 409 and detail(revoked)["code"] == "ROLE_PROTECTED"


async def test_unknown_things_are_404(client: httpx.AsyncClient, admin: Headers) -> None:
    ghost = uuid.uuid4()
    cases = [
        ("GET", "/roles/ghost", "ROLE_NOT_FOUND"),
        ("PATCH", "/roles/ghost", "ROLE_NOT_FOUND"),
        ("DELETE", "/roles/ghost", "ROLE_NOT_FOUND"),
        ("GET", f"/roles/{ghost}", "ROLE_NOT_FOUND"),
        ("PUT", "/roles/ghost/permissions/users:read", "ROLE_NOT_FOUND"),
        ("PUT", "/roles/user/permissions/orders:refund", "PERMISSION_NOT_FOUND"),
        ("GET", "/roles/ghost/users", "ROLE_NOT_FOUND"),
        ("PUT", f"/users/{ghost}/roles/user", "USER_NOT_FOUND"),
        ("DELETE", f"/users/{ghost}/roles/user", "USER_NOT_FOUND"),
        ("GET", f"/users/{ghost}/roles", "USER_NOT_FOUND"),
        ("GET", f"/users/{ghost}/permissions", "USER_NOT_FOUND"),
    ]
    for method, path, code in cases:
        kwargs = {"json": {}} if method == "PATCH" else {}
        response = await client.request(method, path, headers=admin, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, (method, path, response.text)
        assert detail(response)["code"] == code
    malformed = await client.put("/roles/user/permissions/NOT%20VALID", headers=admin)
    assert malformed.status_code == 422
    assert detail(malformed)["code"] == "PERMISSION_NAME_INVALID"


# --- permissions ------------------------------------------------------------------------------


async def test_declare_permissions_for_other_services(
    client: httpx.AsyncClient, admin: Headers, make_user: MakeUser, login: Login
) -> None:
    await make_user("root@example.com", is_superuser=True)
    root = await login("root@example.com")
    created = await client.post(
        "/permissions", headers=admin, json={"name": "orders:refund", "description": "Refunds"}
    )
    assert created.status_code == 201
    assert created.json()["builtin"] is False
    duplicate = await client.post("/permissions", headers=admin, json={"name": "orders:refund"})
    assert duplicate.status_code == 409 and detail(duplicate)["code"] == "PERMISSION_EXISTS"
    for bad in ("orders", "Orders:refund", "orders:", ":refund", "orders:re fund", "a:b:c"):
        response = await client.post("/permissions", headers=admin, json={"name": bad})
        assert response.status_code == 422, bad
    orders = (await client.get("/permissions?resource=orders", headers=admin)).json()
    assert [p["name"] for p in orders["items"]] == ["orders:refund"]
    # Giving another service's permission needs holding it (issue 11): the admin role holds
    # authsvc's permissions only; a superuser holds everything.
    refused = await client.put("/roles/user/permissions/orders:refund", headers=admin)
    assert refused.status_code == 403 and detail(refused)["missing"] == ["orders:refund"]
    granted = await client.put("/roles/user/permissions/orders:refund", headers=root)
    assert granted.status_code == 204
    assert (await client.get("/roles/user", headers=admin)).json()["permissions"] == [
        "orders:refund"
    ]


# --- assignments and the last administrator -------------------------------------------------


async def test_assign_and_unassign_are_idempotent(
    client: httpx.AsyncClient, make_user: MakeUser, admin: Headers
) -> None:
    user = await make_user("member@example.com")
    for _ in range(2):
        assert (await client.put(f"/users/{user.id}/roles/user", headers=admin)).status_code == 204
    members = (await client.get("/roles/user/users", headers=admin)).json()
    assert [m["email"] for m in members["items"]] == ["member@example.com"]
    for _ in range(2):
        response = await client.delete(f"/users/{user.id}/roles/user", headers=admin)
        assert response.status_code == 204
    assert (await client.get(f"/users/{user.id}/roles", headers=admin)).json()["roles"] == []


@pytest.fixture
async def manager(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, assign: Assign, admin: Headers
) -> Headers:
    """Holds roles:write and users:* but is no administrator."""
    await make_role(client, admin, "manager", permissions=["roles:write", "users:*"])
    user = await make_user("manager@example.com")
    await assign(user, "manager")
    return await login("manager@example.com")


async def test_the_last_admin_keeps_the_admin_role(
    client: httpx.AsyncClient, services: AppServices, manager: Headers, admin: Headers
) -> None:
    admin_id = await _id_of(services, "roleadmin@example.com")
    # Taking the admin role away needs what giving it needs (issue 11, item 3)...
    response = await client.delete(f"/users/{admin_id}/roles/admin", headers=manager)
    assert response.status_code == 403 and detail(response)["code"] == "PERMISSION_DENIED"
    # ... and even the administrator may not leave the service without one.
    response = await client.delete(f"/users/{admin_id}/roles/admin", headers=admin)
    assert response.status_code == 409 and detail(response)["code"] == "LAST_ADMIN"
    # The manager may not touch the admin's account at all (it lacks the admin's powers)...
    takeover = await client.patch(f"/users/{admin_id}", headers=manager, json={"is_active": False})
    assert takeover.status_code == 403
    # ...and the admin cannot retire itself while it is the last one.
    for method, body in (("PATCH", {"is_active": False}), ("DELETE", None)):
        refused = await client.request(method, f"/users/{admin_id}", headers=admin, json=body)
        assert refused.status_code == 409 and detail(refused)["code"] == "LAST_ADMIN", method
    assert (await client.get("/roles", headers=admin)).status_code == 200


async def test_the_last_superuser_cannot_be_deleted_or_demoted(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, mfa_login: MfaLogin
) -> None:
    first = await make_user("root@example.com", is_superuser=True)
    second = await make_user("root2@example.com", is_superuser=True)
    # With a second factor: the DELETE below is to meet LAST_ADMIN, not the MFA guardrail.
    second_headers = await mfa_login("root2@example.com")
    # Two administrators: one may demote the other...
    first_headers = await login("root@example.com")
    demoted = await client.patch(
        f"/users/{first.id}", headers=second_headers, json={"is_superuser": False}
    )
    assert demoted.status_code == 200
    # The token that said "permissions": ["*"] no longer passes our guards.
    stale = await client.get("/roles", headers=first_headers)
    assert stale.status_code == 401 and detail(stale)["code"] == "TOKEN_STALE"
    assert (await client.get("/roles", headers=await login("root@example.com"))).status_code == 403
    # ...but the last one can neither demote, deactivate nor delete itself.
    for method, body in (
        ("PATCH", {"is_superuser": False}),
        ("PATCH", {"is_active": False}),
        ("DELETE", None),
    ):
        refused = await client.request(
            method, f"/users/{second.id}", headers=second_headers, json=body
        )
        assert refused.status_code == 409, (method, body)
        assert detail(refused)["code"] == "LAST_ADMIN"
    assert (await client.get("/users/me", headers=second_headers)).json()["is_superuser"]


async def test_no_escalation_beyond_ones_own_permissions(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    login: Login,
    assign: Assign,
    admin: Headers,
    services: AppServices,
) -> None:
    """roles:write and users:write do not let anyone hand themselves more power over authsvc."""
    await make_role(client, admin, "rolemgr", permissions=["roles:write", "users:write"])
    mgr = await make_user("mgr@example.com")
    await assign(mgr, "rolemgr")
    headers = await login("mgr@example.com")
    admin_id = await _id_of(services, "roleadmin@example.com")
    root = await make_user("root@example.com", is_superuser=True)
    # Conferring `admin` is refused by the policies before the permission check sees it.
    policy, permission = "POLICY_DENIED", "PERMISSION_DENIED"
    attempts = [
        ("PUT", f"/users/{mgr.id}/roles/admin", None, policy),
        ("PUT", "/roles/rolemgr/permissions/audit:read", None, permission),
        ("PUT", "/roles/rolemgr/permissions/users:*", None, permission),
        ("POST", "/roles", {"name": "sneaky", "parents": ["admin"]}, policy),
        ("POST", "/roles", {"name": "sneaky", "permissions": ["users:delete"]}, permission),
        ("PATCH", "/roles/rolemgr", {"parents": ["admin"]}, policy),
        ("PATCH", f"/users/{mgr.id}", {"is_superuser": True}, permission),
        ("PATCH", f"/users/{admin_id}", {"password": "taken over passphrase"}, permission),
        ("PATCH", f"/users/{root.id}", {"email": "mine@example.com"}, permission),
    ]
    for method, path, body, code in attempts:
        response = await client.request(method, path, headers=headers, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert detail(response)["code"] == code, (method, path)
    # Another service's permission is a power too: only its holders give it (issue 11)...
    await client.post("/permissions", headers=admin, json={"name": "orders:refund"})
    refused = await client.put("/roles/user/permissions/orders:refund", headers=headers)
    assert refused.status_code == 403 and detail(refused)["missing"] == ["orders:refund"]
    # ... and what it does hold, it may give.
    assert (
        await client.put("/roles/user/permissions/users:write", headers=headers)
    ).status_code == 204
    assert (await client.get("/audit", headers=admin)).json()["items"][0]["action"] == "role.grant"


async def test_concurrent_removals_leave_one_admin(
    client: httpx.AsyncClient,
    make_user: MakeUser,
    assign: Assign,
    admin: Headers,
    services: AppServices,
) -> None:
    second = await make_user("second-admin@example.com")
    await assign(second, "admin")
    first_id = await _id_of(services, "roleadmin@example.com")
    responses = await asyncio.gather(
        client.delete(f"/users/{first_id}/roles/admin", headers=admin),
        client.delete(f"/users/{second.id}/roles/admin", headers=admin),
    )
    assert sorted(r.status_code for r in responses) == [204, 409]
    async with services.sessionmaker() as session:
        graph = await repo.load_graph(session)
        assert await repo.count_admins(session, graph.descendants("admin")) == 1


async def _id_of(services: AppServices, email: str) -> uuid.UUID:
    async with services.sessionmaker() as session:
        from sqlalchemy import select

        found = (await session.scalars(select(User).where(User.email == email))).one()
        return found.id


# --- audit ------------------------------------------------------------------------------------


def _sign_in(event: dict[str, Any]) -> bool:
    """The security trail's sign-in events (the admin fixture signs in), not admin changes."""
    return str(event["action"]).startswith("auth.login.")


async def test_every_mutation_is_audited(
    client: httpx.AsyncClient, make_user: MakeUser, admin: Headers, services: AppServices
) -> None:
    user = await make_user("audited@example.com")
    await make_role(client, admin, "ops", permissions=["users:read"])
    await client.patch("/roles/ops", headers=admin, json={"description": "Operations"})
    await client.put("/roles/ops/permissions/users:write", headers=admin)
    await client.delete("/roles/ops/permissions/users:write", headers=admin)
    await client.post("/permissions", headers=admin, json={"name": "orders:ship"})
    await client.put(f"/users/{user.id}/roles/ops", headers=admin)
    await client.delete(f"/users/{user.id}/roles/ops", headers=admin)
    await client.patch(f"/users/{user.id}", headers=admin, json={"is_verified": False})
    await client.delete("/roles/ops", headers=admin)
    await client.delete(f"/users/{user.id}", headers=admin)

    trail = (await client.get("/audit?limit=200", headers=admin)).json()
    actions = [event["action"] for event in reversed(trail["items"]) if not _sign_in(event)]
    assert actions == [
        "role.create", "role.update", "role.grant", "role.revoke", "permission.create",
        "user.role.assign", "user.role.unassign", "user.update", "role.delete", "user.delete",
    ]  # fmt: skip
    admin_id = str(await _id_of(services, "roleadmin@example.com"))
    for event in trail["items"]:
        assert event["actor_id"] == admin_id
        assert event["actor_email"] == "roleadmin@example.com"
        assert event["client_ip"] == "203.0.113.10"
    update = next(e for e in trail["items"] if e["action"] == "role.update")
    assert update["before"]["description"] == "" and update["after"]["description"] == "Operations"

    by_target = (
        await client.get(f"/audit?target_type=user&target_id={user.id}", headers=admin)
    ).json()
    assert by_target["total"] == 4
    by_action = (await client.get("/audit?action=role.create", headers=admin)).json()
    assert by_action["total"] == 1
    by_actor = (await client.get(f"/audit?actor_id={admin_id}&limit=1", headers=admin)).json()
    # The ten changes (the fixture's MFA session is made directly: no sign-in event).
    assert by_actor["total"] == 10 and len(by_actor["items"]) == 1
    future = (
        await client.get("/audit", headers=admin, params={"since": "2999-01-01T00:00:00Z"})
    ).json()
    assert future["total"] == 0
    naive = await client.get("/audit", headers=admin, params={"since": "2020-01-01T00:00:00"})
    assert naive.status_code == 422


async def test_refused_changes_leave_no_audit_event(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    await client.post("/roles", headers=admin, json={"name": "admin"})
    await client.delete("/roles/user", headers=admin)
    trail = (await client.get("/audit", headers=admin)).json()
    assert [e for e in trail["items"] if not _sign_in(e)] == []


async def test_the_admin_lock_serializes_conflicting_removals(
    make_user: MakeUser, assign: Assign, services: AppServices
) -> None:
    """Two transactions each remove one of the last two admins. The second must wait for the
    first and then refuse; without the lock both would commit and leave no administrator."""
    from authsvc.authz.engine import Principal
    from authsvc.errors import Conflict
    from authsvc.services.roles import RoleService

    first = await make_user("first-admin@example.com")
    second = await make_user("second-admin@example.com")
    await assign(first, "admin")
    await assign(second, "admin")
    actor = Principal(user_id=uuid.uuid4(), email="robot@example.com", is_superuser=True)

    reached_commit, release = asyncio.Event(), asyncio.Event()
    async with services.sessionmaker() as session_a, services.sessionmaker() as session_b:
        real_commit = session_a.commit

        async def gated_commit() -> None:
            # lock_authz commits the lookups' read transaction, then takes the lock; the
            # commit that ends the change (the lock still held) is the one held back.
            if session_a.new:  # the audit event is pending: this is the final commit
                reached_commit.set()
                await release.wait()
            await real_commit()

        session_a.commit = gated_commit  # type: ignore[method-assign]
        service_a = RoleService(session_a, actor, None)
        service_b = RoleService(session_b, actor, None)
        task_a = asyncio.create_task(service_a.unassign(first.id, "admin"))
        await asyncio.wait_for(reached_commit.wait(), 10)  # A holds the lock, not committed
        task_b = asyncio.create_task(service_b.unassign(second.id, "admin"))
        await asyncio.sleep(0.5)
        assert not task_b.done()  # B waits for A's lock
        release.set()
        await task_a
        with pytest.raises(Conflict) as refused:
            await task_b
    assert refused.value.code == "LAST_ADMIN"
    async with services.sessionmaker() as session:
        graph = await repo.load_graph(session)
        assert await repo.count_admins(session, graph.descendants("admin")) == 1


async def test_concurrent_creates_of_one_name_make_one(
    client: httpx.AsyncClient, admin: Headers
) -> None:
    roles = await asyncio.gather(
        *(client.post("/roles", headers=admin, json={"name": "dup"}) for _ in range(3))
    )
    assert sorted(r.status_code for r in roles) == [201, 409, 409]
    assert {detail(r)["code"] for r in roles if r.status_code == 409} == {"ROLE_EXISTS"}
    permissions = await asyncio.gather(
        *(client.post("/permissions", headers=admin, json={"name": "x:y"}) for _ in range(3))
    )
    assert sorted(r.status_code for r in permissions) == [201, 409, 409]
    trail = (await client.get("/audit", headers=admin)).json()
    changes = [e for e in trail["items"] if not _sign_in(e)]
    assert len(changes) == 2  # one create each; the refused ones left nothing
