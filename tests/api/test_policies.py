"""The Cedar policies through the routes they guard, user attributes, the decision API and
policy reloads, on both database engines."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from authsvc.db.models import Role, User
from authsvc.db.repositories import roles as repo
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser, MfaLogin

GUARDRAIL = "guardrail.destructive-only-from-trusted-networks"
MFA_GUARDRAIL = "guardrail.destructive-needs-mfa"
Headers = dict[str, str]


@pytest.fixture
def settings_overrides(policy_dir: Path) -> dict[str, Any]:
    return {"policies_dir": policy_dir}


async def setup_user(
    services: AppServices,
    make_user: MakeUser,
    email: str,
    *,
    roles: tuple[str, ...] = ("user",),
    is_superuser: bool = False,
    **attributes: Any,
) -> User:
    user = await make_user(email, is_superuser=is_superuser)
    async with services.sessionmaker() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        stored.attributes = attributes
        for name in roles:
            role = await repo.get_role(session, name)
            if role is None:
                role = Role(name=name)
                session.add(role)
                await session.flush()
            await repo.assign(session, user.id, role.id)
        await session.commit()
    return user


def detail(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["detail"]
    return body


async def attributes_of(services: AppServices, user: User) -> dict[str, Any]:
    async with services.sessionmaker() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        return dict(stored.attributes)


# --- the shipped policies through authsvc's own routes -------------------------------------


async def test_users_read_and_update_their_own_profile_only(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    alice = await setup_user(services, make_user, "alice@example.com", department="sales")
    bob = await setup_user(services, make_user, "bob@example.com", department="sales")
    headers = await login("alice@example.com")

    own = await client.get(f"/users/{alice.id}", headers=headers)
    assert own.status_code == 200 and own.json()["attributes"] == {"department": "sales"}
    renamed = await client.patch(
        f"/users/{alice.id}",
        headers=headers,
        json={"email": "alice2@example.com", "current_password": PASSWORD},
    )
    # Allowed; the owner's email change waits for the new address to confirm it (issue 13).
    assert renamed.status_code == 200 and renamed.json()["email"] == "alice@example.com"

    other = await client.get(f"/users/{bob.id}", headers=headers)
    assert other.status_code == 403
    assert detail(other) == {
        "code": "POLICY_DENIED",
        "message": "No policy permits 'users:read' here.",
        "action": "users:read",
        "policies": [],
    }
    assert (await client.patch(f"/users/{bob.id}", headers=headers, json={})).status_code == 403
    # Their own flags and attributes stay out of reach; nothing is written.
    for body, code in [
        ({"is_verified": False}, "USER_FIELD_READ_ONLY"),
        ({"is_active": False}, "USER_FIELD_READ_ONLY"),
        ({"attributes": {"department": "board"}}, "POLICY_DENIED"),
        ({"password": "a brand new passphrase"}, "CURRENT_PASSWORD_INVALID"),
    ]:
        refused = await client.patch(f"/users/{alice.id}", headers=headers, json=body)
        assert refused.status_code in (401, 403, 422), (body, refused.text)
        assert detail(refused)["code"] == code, body
    assert await attributes_of(services, alice) == {"department": "sales"}
    # A random id answers 403 to someone who could not read it anyway, not 404.
    missing = await client.get(f"/users/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 403 and detail(missing)["code"] == "POLICY_DENIED"


async def test_department_admins_manage_their_department_and_never_a_superuser(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    await setup_user(
        services, make_user, "dana@example.com", roles=("department_admin",), department="sales"
    )
    colleague = await setup_user(services, make_user, "sam@example.com", department="sales")
    outsider = await setup_user(services, make_user, "rita@example.com", department="research")
    boss = await setup_user(
        services, make_user, "boss@example.com", is_superuser=True, department="sales"
    )
    headers = await login("dana@example.com")

    read = await client.get(f"/users/{colleague.id}", headers=headers)
    assert read.status_code == 200
    updated = await client.patch(
        f"/users/{colleague.id}", headers=headers, json={"is_verified": False}
    )
    assert updated.status_code == 200 and updated.json()["is_verified"] is False

    for target in (outsider, boss):
        refused = await client.patch(
            f"/users/{target.id}", headers=headers, json={"is_active": False}
        )
        assert refused.status_code == 403, target.email
        assert detail(refused)["code"] == "POLICY_DENIED"
    # Moving people between departments is for users:write holders: the policies decide
    # users:set-attributes, and grant it no department admin.
    moved = await client.patch(
        f"/users/{colleague.id}", headers=headers, json={"attributes": {"department": "x"}}
    )
    assert moved.status_code == 403 and detail(moved)["code"] == "POLICY_DENIED"
    deleted = await client.delete(f"/users/{colleague.id}", headers=headers)
    # Nothing permits it; the MFA guardrail forbids it too, but a second factor would not
    # help, so the answer is POLICY_DENIED (not MFA_REQUIRED).
    assert deleted.status_code == 403 and detail(deleted)["policies"] == [MFA_GUARDRAIL]
    assert detail(deleted)["code"] == "POLICY_DENIED"
    # The department lives in the user row: a move takes effect on the next request.
    async with services.sessionmaker() as session:
        stored = await session.get(User, colleague.id)
        assert stored is not None
        stored.attributes = {"department": "research"}
        await session.commit()
    assert (await client.get(f"/users/{colleague.id}", headers=headers)).status_code == 403


async def test_only_a_superuser_grants_the_admin_role(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    mfa_login: MfaLogin,
    admin_headers: Headers,
) -> None:
    await setup_user(services, make_user, "deputy@example.com", roles=("admin",))
    target = await setup_user(services, make_user, "target@example.com")
    # With a second factor: the admin role is in force (AUTHSVC_MFA_REQUIRED_ROLES).
    deputy = await mfa_login("deputy@example.com")

    refused = await client.put(f"/users/{target.id}/roles/admin", headers=deputy)
    assert refused.status_code == 403
    assert detail(refused)["code"] == "POLICY_DENIED"
    assert detail(refused)["policies"] == ["roles.admin-only-by-superuser"]
    # Nor through a role that inherits from admin, made now or already there.
    sneaky = await client.post(
        "/roles", headers=deputy, json={"name": "sneaky", "parents": ["admin"]}
    )
    assert sneaky.status_code == 403
    assert detail(sneaky)["policies"] == ["roles.admin-only-by-superuser"]
    ops = await client.post(
        "/roles", headers=admin_headers, json={"name": "ops", "parents": ["admin"]}
    )
    assert ops.status_code == 201
    via_ops = await client.put(f"/users/{target.id}/roles/ops", headers=deputy)
    assert via_ops.status_code == 403
    assert detail(via_ops)["policies"] == ["roles.admin-only-by-superuser"]
    async with services.sessionmaker() as session:
        assert await repo.user_role_names(session, target.id) == ["user"]

    # An ordinary role is fine for the deputy; admin is fine for the superuser.
    await client.post("/roles", headers=admin_headers, json={"name": "editor"})
    assert (await client.put(f"/users/{target.id}/roles/editor", headers=deputy)).status_code == 204
    granted = await client.put(f"/users/{target.id}/roles/admin", headers=admin_headers)
    assert granted.status_code == 204


@pytest.mark.parametrize("settings_overrides", [{"trusted_networks": ["10.0.0.0/8"]}])
async def test_destructive_actions_are_refused_outside_the_trusted_networks(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    admin_headers: Headers,
    mfa_admin_headers: Headers,
) -> None:
    # The test client (203.0.113.10) is outside 10.0.0.0/8 here: even a superuser is refused,
    # with a second factor too.
    victim = await setup_user(services, make_user, "victim@example.com")
    await client.post("/roles", headers=admin_headers, json={"name": "temp"})
    for path in (f"/users/{victim.id}", "/roles/temp"):
        refused = await client.delete(path, headers=mfa_admin_headers)
        assert refused.status_code == 403, path
        assert detail(refused)["policies"] == [GUARDRAIL]
        assert detail(refused)["message"] == f"Denied by policy {GUARDRAIL!r}."
    assert (await client.get(f"/users/{victim.id}", headers=admin_headers)).status_code == 200
    assert (await client.get("/roles/temp", headers=admin_headers)).status_code == 200


async def test_destructive_actions_pass_from_a_trusted_network(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    mfa_admin_headers: Headers,
) -> None:
    victim = await setup_user(services, make_user, "victim@example.com")
    deleted = await client.delete(f"/users/{victim.id}", headers=mfa_admin_headers)
    assert deleted.status_code == 204
    # Only now, allowed, does the caller learn that it is gone.
    again = await client.delete(f"/users/{victim.id}", headers=mfa_admin_headers)
    assert again.status_code == 404 and detail(again)["code"] == "USER_NOT_FOUND"


# --- user attributes -----------------------------------------------------------------------


async def test_admins_set_attributes_checked_against_the_schema(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, admin_headers: Headers
) -> None:
    user = await setup_user(services, make_user, "attr@example.com")
    ok = await client.patch(
        f"/users/{user.id}",
        headers=admin_headers,
        json={"attributes": {"department": "sales", "title": "Engineer"}},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["attributes"] == {"department": "sales", "title": "Engineer"}
    audit = (await client.get("/audit", headers=admin_headers)).json()["items"][0]
    assert audit["after"]["attributes"] == {"department": "sales", "title": "Engineer"}

    for attributes in [
        {"shoe_size": 44},  # not declared in the schema
        {"department": 7},  # declared as a String
        {"department": ["a", "b"]},
        {"is_superuser": True},  # authsvc's own
        {"roles": ["admin"]},
        {"Department": "x"},
        {"department": None},
        {f"a{i}": "x" for i in range(33)},
        {"department": "x" * 5000},
    ]:
        refused = await client.patch(
            f"/users/{user.id}", headers=admin_headers, json={"attributes": attributes}
        )
        assert refused.status_code == 422, attributes
        assert detail(refused)["code"] == "USER_ATTRIBUTES_INVALID", attributes
    assert await attributes_of(services, user) == {"department": "sales", "title": "Engineer"}
    cleared = await client.patch(
        f"/users/{user.id}", headers=admin_headers, json={"attributes": {}}
    )
    assert cleared.status_code == 200 and cleared.json()["attributes"] == {}


# --- the decision API ----------------------------------------------------------------------


async def test_check_defaults_to_the_caller(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    alice = await setup_user(services, make_user, "alice@example.com")
    bob = await setup_user(services, make_user, "bob@example.com")
    headers = await login("alice@example.com")
    own = await client.post(
        "/authz/check",
        headers=headers,
        json={"action": "users:write", "resource": {"type": "User", "id": str(alice.id)}},
    )
    assert own.status_code == 200
    assert own.json() == {"decision": "allow", "reasons": ["users.own-profile"], "errors": []}
    other = await client.post(
        "/authz/check",
        headers=headers,
        json={"action": "users:write", "resource": {"type": "User", "id": str(bob.id)}},
    )
    assert other.json() == {"decision": "deny", "reasons": [], "errors": []}
    # Naming someone else needs authz:check.
    asked = await client.post(
        "/authz/check",
        headers=headers,
        json={
            "principal": {"type": "User", "id": str(bob.id)},
            "action": "users:read",
            "resource": {"type": "User", "id": str(bob.id)},
        },
    )
    assert asked.status_code == 403 and detail(asked)["missing"] == ["authz:check"]
    assert (await client.post("/authz/check", json={})).status_code == 401


async def test_check_for_another_principal_with_context(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    admin_headers: Headers,
    mfa_admin_headers: Headers,
) -> None:
    dana = await setup_user(
        services, make_user, "dana@example.com", roles=("department_admin",), department="sales"
    )
    sam = await setup_user(services, make_user, "sam@example.com", department="sales")

    def body(action: str, resource: str, **context: Any) -> dict[str, Any]:
        return {
            "principal": {"type": "User", "id": str(dana.id)},
            "action": action,
            "resource": {"type": "User", "id": resource},
            "context": context,
        }

    allowed = await client.post(
        "/authz/check", headers=admin_headers, json=body("users:write", str(sam.id))
    )
    assert allowed.json()["decision"] == "allow"
    assert allowed.json()["reasons"] == ["users.department-admin"]
    # The superuser, with a second factor, deletes from outside: the guardrail says no.
    me = (await client.get("/users/me", headers=mfa_admin_headers)).json()["id"]
    outside = await client.post(
        "/authz/check",
        headers=mfa_admin_headers,
        json={
            "action": "users:delete",
            "resource": {"type": "User", "id": str(sam.id)},
            "context": {"ip": "198.51.100.7"},
        },
    )
    assert outside.json() == {"decision": "deny", "reasons": [GUARDRAIL], "errors": []}
    assert me


async def test_check_batch_and_service_clients(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, admin_headers: Headers
) -> None:
    alice = await setup_user(services, make_user, "alice@example.com")
    created = await client.post(
        "/clients", headers=admin_headers, json={"name": "orders", "permissions": ["authz:check"]}
    )
    assert created.status_code == 201, created.text
    raw = f"{created.json()['id']}:{created.json()['client_secret']}"
    token = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()},
    )
    assert token.status_code == 200, token.text
    service = {"Authorization": f"Bearer {token.json()['access_token']}"}
    principal = {"type": "User", "id": str(alice.id)}
    audit = {"type": "AuditLog", "id": "audit"}
    checks = [
        {"principal": principal, "action": "users:read", "resource": principal},
        {"principal": principal, "action": "users:delete", "resource": principal},
        {"principal": principal, "action": "audit:read", "resource": audit},
    ]
    batch = await client.post("/authz/check/batch", headers=service, json={"checks": checks})
    assert batch.status_code == 200, batch.text
    assert [r["decision"] for r in batch.json()["results"]] == ["allow", "deny", "deny"]
    assert batch.json()["results"][0]["reasons"] == ["users.own-profile"]
    # A service client has no "self": it must name the principal.
    nameless = await client.post(
        "/authz/check", headers=service, json={"action": "users:read", "resource": principal}
    )
    assert nameless.status_code == 422 and detail(nameless)["code"] == "AUTHZ_CHECK_INVALID"
    # 100 is the most; 101 is refused whole.
    many = await client.post(
        "/authz/check/batch", headers=service, json={"checks": [checks[0]] * 100}
    )
    assert many.status_code == 200 and len(many.json()["results"]) == 100
    too_many = await client.post(
        "/authz/check/batch", headers=service, json={"checks": [checks[0]] * 101}
    )
    assert too_many.status_code == 422
    # One bad check refuses the batch and says which.
    bad = [checks[0], {**checks[0], "action": "users:fly"}]
    refused = await client.post("/authz/check/batch", headers=service, json={"checks": bad})
    assert refused.status_code == 422 and detail(refused)["index"] == 1


async def test_malformed_checks_are_clear_4xx(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, admin_headers: Headers
) -> None:
    alice = await setup_user(services, make_user, "alice@example.com")
    me = {"type": "User", "id": str(alice.id)}
    bad, invalid = "AUTHZ_CHECK_INVALID", "VALIDATION_ERROR"
    read = {"action": "users:read"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"resource": me}, invalid),  # no action
        (read, invalid),  # no resource
        ({**read, "resource": me, "extra": 1}, invalid),
        ({"action": "users:fly", "resource": me}, bad),
        ({**read, "resource": {"type": "Spaceship", "id": "1"}}, bad),
        ({**read, "resource": {"type": "User", "id": "not-a-uuid"}}, bad),
        ({**read, "resource": {**me, "attributes": {"email": "x"}}}, bad),
        ({**read, "resource": {"type": "Role", "id": "nope"}}, bad),
        ({**read, "principal": {"type": "Role", "id": "admin"}, "resource": me}, bad),
        ({**read, "resource": me, "context": {"trusted_network": True}}, bad),
        ({**read, "resource": me, "context": {"ip": "not an ip"}}, bad),
        ({**read, "resource": me, "context": {"colour": "red"}}, bad),
        ({"action": 'Action::"users:read"', "resource": me}, invalid),
        ({**read, "resource": {"type": 'User::"x"', "id": "1"}}, invalid),
    ]
    for body, code in cases:
        response = await client.post("/authz/check", headers=admin_headers, json=body)
        assert response.status_code == 422, (body, response.text)
        assert detail(response)["code"] == code, body


# --- other services' entity types, reloads --------------------------------------------------

ORDERS_SCHEMA = """
namespace Orders {
  entity Order { owner: User, amount: Long };
  action "refund" appliesTo { principal: User, resource: Order, context: RequestContext };
}
"""
ORDERS_POLICY = """
@id("orders.owner-refunds-small")
permit (principal, action == Orders::Action::"refund", resource)
when { resource.owner == principal && resource.amount <= 100 };
"""


def refused(services: AppServices) -> float:
    """Refused reloads so far: the app is shared between tests, so tests compare counts."""
    value = services.metrics.registry.get_sample_value(
        "authsvc_policy_reloads_total", {"outcome": "refused"}
    )
    return value or 0.0


async def test_reload_adds_another_services_policies_and_a_broken_reload_changes_nothing(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    admin_headers: Headers,
    policy_dir: Path,
) -> None:
    alice = await setup_user(services, make_user, "alice@example.com")
    headers = await login("alice@example.com")

    def refund(amount: int) -> dict[str, Any]:
        owner = {"__entity": {"type": "User", "id": str(alice.id)}}
        attributes = {"owner": owner, "amount": amount}
        order = {"type": "Orders::Order", "id": "o-1", "attributes": attributes}
        return {"action": "Orders::refund", "resource": order}

    refused_before = refused(services)
    before = (await client.get("/authz/policies", headers=admin_headers)).json()
    unknown = await client.post("/authz/check", headers=headers, json=refund(10))
    assert unknown.status_code == 422  # Orders is not declared yet

    (policy_dir / "orders.cedarschema").write_text(ORDERS_SCHEMA)
    (policy_dir / "orders.cedar").write_text(ORDERS_POLICY)
    reloaded = await client.post("/authz/policies/reload", headers=admin_headers)
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["digest"] != before["digest"]
    assert "orders.owner-refunds-small" in {p["id"] for p in reloaded.json()["policies"]}
    small = await client.post("/authz/check", headers=headers, json=refund(10))
    assert small.json() == {
        "decision": "allow", "reasons": ["orders.owner-refunds-small"], "errors": []
    }  # fmt: skip
    assert (await client.post("/authz/check", headers=headers, json=refund(500))).json()[
        "decision"
    ] == "deny"
    wrong_type = await client.post("/authz/check", headers=headers, json=refund("ten"))  # type: ignore[arg-type]
    assert wrong_type.status_code == 422

    # A broken edit: refused with file and id, and the loaded set stays in force.
    typo = '@id("orders.typo")\npermit (principal, action, resource) when { resource.amout > 1 };'
    (policy_dir / "orders.cedar").write_text(ORDERS_POLICY + "\n" + typo + "\n")
    broken = await client.post("/authz/policies/reload", headers=admin_headers)
    assert broken.status_code == 422
    assert detail(broken)["code"] == "POLICY_INVALID"
    problems = detail(broken)["problems"]
    assert {(p["file"], p["policy_id"]) for p in problems} == {("orders.cedar", "orders.typo")}
    assert "attribute `amout`" in problems[0]["message"]
    still = (await client.get("/authz/policies", headers=admin_headers)).json()
    assert still["digest"] == reloaded.json()["digest"]
    assert (await client.post("/authz/check", headers=headers, json=refund(10))).json()[
        "decision"
    ] == "allow"
    metrics = generate_latest(services.metrics.registry).decode()
    assert refused(services) == refused_before + 1  # the app (and its metrics) is shared
    assert 'authsvc_policy_decisions_total{decision="allow",source="api"}' in metrics
    assert 'authsvc_policy_decision_seconds_count{source="api"}' in metrics


async def test_policy_routes_are_guarded(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser, login: Login
) -> None:
    await setup_user(services, make_user, "plain@example.com")
    headers = await login("plain@example.com")
    assert (await client.get("/authz/policies", headers=headers)).status_code == 403
    assert (await client.post("/authz/policies/reload", headers=headers)).status_code == 403
    assert (await client.post("/authz/policies/reload")).status_code == 401
