"""Issue 11, items 1-4: nobody gains, or takes away, a power they do not hold.

Each test replays a hole found by the outside review end to end through the routes. The
generated matrix over every caller and every mutating route is in test_no_escalation.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from authsvc.db.models import Permission, Role, User
from authsvc.db.repositories import roles as repo
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser, MfaLogin

Headers = dict[str, str]


@pytest.fixture
def settings_overrides(policy_dir: Path) -> dict[str, Any]:
    return {"policies_dir": policy_dir}


async def grant_role(
    services: AppServices, user: User, role_name: str, permissions: tuple[str, ...] = ()
) -> None:
    """Give ``user`` the role (created with ``permissions`` when missing), bypassing the API."""
    async with services.sessionmaker() as session:
        role = await repo.get_role(session, role_name)
        if role is None:
            role = Role(name=role_name)
            session.add(role)
            await session.flush()
        for name in permissions:
            permission = await repo.get_permission(session, name)
            if permission is None:
                permission = Permission(name=name, description=name)
                session.add(permission)
                await session.flush()
            await repo.grant(session, role.id, permission.id)
        await repo.assign(session, user.id, role.id)
        await session.commit()


async def set_attributes(services: AppServices, user: User, **attributes: Any) -> None:
    async with services.sessionmaker() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        stored.attributes = attributes
        await session.commit()


async def stored(services: AppServices, user: User) -> User:
    async with services.sessionmaker() as session:
        found = await session.get(User, user.id)
        assert found is not None
        return found


def code(response: httpx.Response) -> str:
    return str(response.json()["detail"]["code"])


async def test_a_role_manager_cannot_make_themself_department_admin(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    """Item 1: roles:write alone, then the department_admin role by name, then a victim."""
    mallory = await make_user("mallory@example.com")
    await grant_role(services, mallory, "role-managers", ("roles:write", "roles:read"))
    await set_attributes(services, mallory, department="sales")
    victim = await make_user("victim@example.com")
    await set_attributes(services, victim, department="sales")
    headers = await login("mallory@example.com")

    created = await client.post("/roles", headers=headers, json={"name": "department_admin"})
    assert created.status_code == 201  # a role with no holders confers nothing yet
    assigned = await client.put(f"/users/{mallory.id}/roles/department_admin", headers=headers)
    assert assigned.status_code == 403, assigned.text
    assert code(assigned) == "PERMISSION_DENIED"
    assert assigned.json()["detail"]["missing"] == ["role:department_admin"]
    # Nor through a composite role that inherits it, nor by renaming a role one holds.
    composite = await client.post(
        "/roles", headers=headers, json={"name": "sneaky", "parents": ["department_admin"]}
    )
    assert composite.status_code == 403, composite.text
    renamed = await client.patch(
        "/roles/role-managers", headers=headers, json={"name": "department_admin"}
    )
    assert renamed.status_code in (403, 409), renamed.text
    reparented = await client.patch(
        "/roles/role-managers", headers=headers, json={"parents": ["department_admin"]}
    )
    assert reparented.status_code == 403, reparented.text

    headers = await login("mallory@example.com")
    takeover = await client.patch(
        f"/users/{victim.id}", headers=headers, json={"password": "a brand new passphrase"}
    )
    assert takeover.status_code == 403
    victim_now = await stored(services, victim)
    assert await services.hasher.verify(PASSWORD, victim_now.hashed_password)


async def test_a_user_admin_cannot_change_an_account_holding_more(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    """Item 2: users:write does not reach an account holding another service's permission."""
    hr = await make_user("hr@example.com")
    await grant_role(services, hr, "user-admins", ("users:write", "users:read"))
    cashier = await make_user("cashier@example.com")
    await grant_role(services, cashier, "refunds", ("orders:refund",))
    headers = await login("hr@example.com")

    for body in (
        {"password": "a brand new passphrase"},
        {"email": "mine@example.com"},
        {"is_active": False},
    ):
        refused = await client.patch(f"/users/{cashier.id}", headers=headers, json=body)
        assert refused.status_code == 403, (body, refused.text)
        assert refused.json()["detail"]["missing"] == ["orders:refund"]
    after = await stored(services, cashier)
    assert after.email == "cashier@example.com" and after.is_active
    assert await services.hasher.verify(PASSWORD, after.hashed_password)
    sessions = await client.delete(f"/users/{cashier.id}/sessions", headers=headers)
    assert sessions.status_code == 403


async def test_taking_away_needs_what_giving_needs(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, mfa_login: MfaLogin
) -> None:
    """Item 3: roles:write alone cannot strip an admin, revoke audit:read, rename or
    force-delete roles carrying permissions it lacks."""
    mallory = await make_user("mallory@example.com")
    await grant_role(services, mallory, "role-managers", ("roles:write", "roles:read"))
    admin1 = await make_user("admin1@example.com")
    admin2 = await make_user("admin2@example.com")
    await grant_role(services, admin1, "admin")
    await grant_role(services, admin2, "admin")
    auditor = await make_user("auditor@example.com")
    await grant_role(services, auditor, "auditors", ("audit:read",))
    # With a second factor: the MFA guardrail on roles:delete is not what this is about.
    headers = await mfa_login("mallory@example.com")

    attempts = [
        client.delete(f"/users/{admin2.id}/roles/admin", headers=headers),
        client.delete(f"/users/{auditor.id}/roles/auditors", headers=headers),
        client.delete("/roles/auditors/permissions/audit:read", headers=headers),
        client.patch("/roles/auditors", headers=headers, json={"name": "renamed"}),
        client.delete("/roles/auditors", headers=headers, params={"force": "true"}),
    ]
    for attempt in attempts:
        response = await attempt
        assert response.status_code == 403, response.text
        assert response.json()["detail"]["missing"] == ["audit:read"] or (
            "audit:read" in response.json()["detail"]["missing"]
        )
    async with services.sessionmaker() as session:
        assert "admin" in await repo.user_role_names(session, admin2.id)
        assert await repo.user_role_names(session, auditor.id) == ["auditors"]
        role = await repo.get_role(session, "auditors")
        assert role is not None
        assert await repo.role_permission_names(session, role.id) == ["audit:read"]


@pytest.mark.parametrize("body", [{"attributes": None}, {"attributes": {"department": None}}])
async def test_null_attributes_are_refused_and_nothing_breaks(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    body: dict[str, Any],
) -> None:
    """Item 4: `attributes: null` was stored by a department admin, then every read of the
    victim answered 500."""
    dana = await make_user("dana@example.com")
    await grant_role(services, dana, "department_admin")
    await set_attributes(services, dana, department="sales")
    victim = await make_user("victim@example.com")
    await set_attributes(services, victim, department="sales")
    headers = await login("dana@example.com")

    refused = await client.patch(f"/users/{victim.id}", headers=headers, json=body)
    assert refused.status_code in (403, 422), refused.text
    assert (await stored(services, victim)).attributes == {"department": "sales"}
    assert (await client.get(f"/users/{victim.id}", headers=headers)).status_code == 200
    victim_headers = await login("victim@example.com")
    assert (await client.get("/users/me", headers=victim_headers)).status_code == 200


async def test_null_attributes_from_a_superuser_are_a_422(
    client: httpx.AsyncClient, make_user: MakeUser, admin_headers: Headers
) -> None:
    victim = await make_user("victim@example.com")
    refused = await client.patch(
        f"/users/{victim.id}", headers=admin_headers, json={"attributes": None}
    )
    assert refused.status_code == 422, refused.text
    assert code(refused) == "USER_ATTRIBUTES_INVALID"
    listed = await client.get("/users", headers=admin_headers)
    assert listed.status_code == 200


async def test_attributes_are_powers_decided_by_the_policies(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    """Item 4: a department admin cannot move themself (or anyone) into another department;
    users:write holders and superusers can (the shipped policies)."""
    dana = await make_user("dana@example.com")
    await grant_role(services, dana, "department_admin")
    await set_attributes(services, dana, department="sales")
    colleague = await make_user("sam@example.com")
    await set_attributes(services, colleague, department="sales")
    hr = await make_user("hr@example.com")
    await grant_role(services, hr, "user-admins", ("users:write", "users:read"))
    root = await make_user("root@example.com", is_superuser=True)
    dana_headers = await login("dana@example.com")
    hr_headers = await login("hr@example.com")
    root_headers = await login("root@example.com")

    own = await client.patch(
        f"/users/{dana.id}", headers=dana_headers, json={"attributes": {"department": "board"}}
    )
    assert own.status_code == 403 and code(own) == "POLICY_DENIED", own.text
    moved = await client.patch(
        f"/users/{colleague.id}",
        headers=dana_headers,
        json={"attributes": {"department": "board"}},
    )
    assert moved.status_code == 403 and code(moved) == "POLICY_DENIED", moved.text
    assert (await stored(services, dana)).attributes == {"department": "sales"}
    assert (await stored(services, colleague)).attributes == {"department": "sales"}

    by_hr = await client.patch(
        f"/users/{colleague.id}",
        headers=hr_headers,
        json={"attributes": {"department": "research"}},
    )
    assert by_hr.status_code == 200, by_hr.text
    by_root = await client.patch(
        f"/users/{root.id}", headers=root_headers, json={"attributes": {"department": "board"}}
    )
    assert by_root.status_code == 200, by_root.text
    # A user admin does not reach a department admin: that role is a power the policies give.
    refused = await client.patch(
        f"/users/{dana.id}", headers=hr_headers, json={"password": "a brand new passphrase"}
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"]["missing"] == ["role:department_admin"]


async def test_role_managers_still_manage_what_they_hold(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    """The rule refuses only what the caller lacks: a holder of roles:write and audit:read
    gives and takes audit:read freely."""
    manager = await make_user("manager@example.com")
    await grant_role(services, manager, "managers", ("roles:write", "roles:read", "audit:read"))
    member = await make_user("member@example.com")
    headers = await login("manager@example.com")

    assert (
        await client.post("/roles", headers=headers, json={"name": "auditors"})
    ).status_code == 201
    for response in (
        await client.put("/roles/auditors/permissions/audit:read", headers=headers),
        await client.put(f"/users/{member.id}/roles/auditors", headers=headers),
        await client.delete(f"/users/{member.id}/roles/auditors", headers=headers),
        await client.delete("/roles/auditors/permissions/audit:read", headers=headers),
    ):
        assert response.status_code == 204, response.text
    granted = await client.put("/roles/auditors/permissions/keys:write", headers=headers)
    assert granted.status_code == 403
    assert granted.json()["detail"]["missing"] == ["keys:write"]


async def test_a_role_named_as_a_string_by_a_policy_is_a_power(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    policy_dir: Path,
    admin_headers: Headers,
) -> None:
    """A policy may name a role through the `roles` attribute instead of `Role::"…"`."""
    (policy_dir / "auditors.cedar").write_text(
        '@id("audit.by-auditor-role")\n'
        'permit (principal, action == Action::"audit:read", resource)\n'
        'when { principal.roles.contains("auditor") };\n'
    )
    assert (await client.post("/authz/policies/reload", headers=admin_headers)).status_code == 200
    mallory = await make_user("mallory@example.com")
    await grant_role(services, mallory, "role-managers", ("roles:write", "roles:read"))
    headers = await login("mallory@example.com")
    assert (
        await client.post("/roles", headers=headers, json={"name": "auditor"})
    ).status_code == 201
    refused = await client.put(f"/users/{mallory.id}/roles/auditor", headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"]["missing"] == ["role:auditor"]
    assert (
        await client.get("/audit", headers=await login("mallory@example.com"))
    ).status_code == 403


async def test_deleting_a_client_needs_its_permissions(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    admin_headers: Headers,
) -> None:
    """Taking a service client's permissions away (deleting it) needs what giving them did."""
    created = await client.post(
        "/clients", headers=admin_headers, json={"name": "auditor", "permissions": ["audit:read"]}
    )
    assert created.status_code == 201, created.text
    manager = await make_user("clientmgr@example.com")
    await grant_role(services, manager, "client-managers", ("clients:write", "clients:read"))
    headers = await login("clientmgr@example.com")
    refused = await client.delete(f"/clients/{created.json()['id']}", headers=headers)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"]["missing"] == ["audit:read"]
    listed = await client.get("/clients", headers=admin_headers)
    assert [c["id"] for c in listed.json()] == [created.json()["id"]]
