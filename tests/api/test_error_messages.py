"""Error messages say what is wrong without echoing a user's data, and a service token on a
route that needs a user's token is told so (not "invalid or expired")."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from authsvc.db.models import Role, User
from authsvc.db.repositories import roles as repo
from authsvc.services.container import AppServices
from tests.conftest import Login, MakeUser

Headers = dict[str, str]

# Markers: if any of them shows up in an error body, the body echoes the user's data.
MARKER_EMAIL = "marker-mail-7f3a@leak.example"
MARKER_DEPARTMENT = "marker-dept-5c1e"
MARKER_ROLE = "marker_role_9d2b"
MARKERS = (MARKER_EMAIL, MARKER_DEPARTMENT, MARKER_ROLE)

ORDERS_SCHEMA = """
namespace Orders {
  entity Order { owner: User, amount: Long };
  action "refund" appliesTo { principal: User, resource: Order, context: RequestContext };
}
"""
SERVICE_TOKEN_MESSAGE = (
    "This route needs a user's access token; service (client_credentials) tokens are "
    "accepted only by POST /authz/check and POST /authz/check/batch."
)


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    """The shipped policies and another service's schema."""
    (policy_dir / "orders.cedarschema").write_text(ORDERS_SCHEMA)
    return policy_dir


@pytest.fixture
def settings_overrides(policy_dir: Path) -> dict[str, Any]:
    return {"policies_dir": policy_dir}


async def marked_user(services: AppServices, make_user: MakeUser) -> User:
    user = await make_user(MARKER_EMAIL)
    async with services.sessionmaker() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        stored.attributes = {"department": MARKER_DEPARTMENT}
        role = Role(name=MARKER_ROLE)
        session.add(role)
        await session.flush()
        await repo.assign(session, user.id, role.id)
        await session.commit()
    return user


async def service_headers(
    client: httpx.AsyncClient, admin: Headers, permissions: list[str]
) -> Headers:
    created = await client.post(
        "/clients", headers=admin, json={"name": "orders", "permissions": permissions}
    )
    assert created.status_code == 201, created.text
    raw = f"{created.json()['id']}:{created.json()['client_secret']}"
    token = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()},
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def detail(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["detail"]
    return body


def assert_no_marker(response: httpx.Response) -> None:
    text = response.text
    leaked = [marker for marker in MARKERS if marker in text]
    assert not leaked, (leaked, text)


async def test_service_token_on_a_user_route_is_told_why(
    client: httpx.AsyncClient, admin_headers: Headers
) -> None:
    service = await service_headers(client, admin_headers, ["users:read", "clients:read"])
    for method, path in (("GET", "/users"), ("GET", "/clients"), ("GET", "/roles")):
        response = await client.request(method, path, headers=service)
        assert response.status_code == 403, (path, response.text)
        assert detail(response) == {
            "code": "USER_TOKEN_REQUIRED",
            "message": SERVICE_TOKEN_MESSAGE,
        }, path
    # The routes that take service tokens still do.
    check = await client.post(
        "/authz/check",
        headers=service,
        json={"principal": {"type": "Role", "id": "x"}, "action": "users:read",
              "resource": {"type": "AuditLog", "id": "audit"}},
    )  # fmt: skip
    assert check.status_code in (403, 422), check.text
    assert detail(check)["code"] != "USER_TOKEN_REQUIRED"


async def test_other_token_refusals_keep_their_codes(client: httpx.AsyncClient) -> None:
    missing = await client.get("/users")
    assert detail(missing) == {
        "code": "NOT_AUTHENTICATED",
        "message": "Authentication required: send a bearer access token.",
    }
    forged = await client.get("/users", headers={"Authorization": "Bearer a.b.c"})
    assert forged.status_code == 401
    assert detail(forged) == {
        "code": "TOKEN_INVALID",
        "message": "The access token is invalid or expired.",
    }


async def test_authz_check_errors_do_not_echo_user_data(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    admin_headers: Headers,
) -> None:
    user = await marked_user(services, make_user)
    me = {"type": "User", "id": str(user.id)}
    own = await login(MARKER_EMAIL)
    service = await service_headers(client, admin_headers, ["authz:check"])

    def order(amount: Any) -> dict[str, Any]:
        owner = {"__entity": {"type": "User", "id": str(user.id)}}
        attributes = {"owner": owner, "amount": amount}
        return {"type": "Orders::Order", "id": "o-1", "attributes": attributes}

    read = {"action": "users:read", "resource": me}
    cases: list[tuple[Headers, dict[str, Any], int, str, str]] = [
        # An attribute of the wrong type: Cedar's own message dumps every entity.
        (own, {"action": "Orders::refund", "resource": order("ten")}, 422,
         "AUTHZ_CHECK_INVALID",
         "The attributes of the resource (Orders::Order) do not fit the policy schema: "
         "attribute `amount` should be a long, not a string."),
        (service, {"principal": me, "action": "Orders::refund", "resource": order("ten")}, 422,
         "AUTHZ_CHECK_INVALID",
         "The attributes of the resource (Orders::Order) do not fit the policy schema: "
         "attribute `amount` should be a long, not a string."),
        (own, {"action": "users:fly", "resource": me}, 422, "AUTHZ_CHECK_INVALID",
         "The request does not fit the policy schema: action `Action::\"users:fly\"` does not "
         "exist in the supplied schema."),
        (own, {**read, "context": {"ip": "10.0.0.1/8"}}, 422, "AUTHZ_CHECK_INVALID",
         "context.ip is not an IP address."),
        (own, {**read, "context": {"colour": "red"}}, 422, "AUTHZ_CHECK_INVALID",
         "The request does not fit the policy schema: while parsing context, record attribute "
         "`colour` should not exist according to the schema."),
        (own, {**read, "resource": {"type": "Role", "id": "nope"}}, 422, "AUTHZ_CHECK_INVALID",
         "No such Role."),
        (service, {"principal": {"type": "User", "id": "not-a-user"}, **read}, 422,
         "AUTHZ_CHECK_INVALID", "No such User principal."),
        (service, read, 422, "AUTHZ_CHECK_INVALID", "A service client must name the principal."),
    ]  # fmt: skip
    for headers, body, status, code, message in cases:
        response = await client.post("/authz/check", headers=headers, json=body)
        assert response.status_code == status, (body, response.text)
        assert detail(response)["code"] == code, body
        assert detail(response)["message"] == message, body
        assert_no_marker(response)
        batch = await client.post("/authz/check/batch", headers=headers, json={"checks": [body]})
        assert batch.status_code == status, (body, batch.text)
        assert detail(batch)["message"] == f"checks[0]: {message}", body
        assert_no_marker(batch)


async def test_stored_attributes_that_no_longer_fit_are_not_echoed(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    policy_dir: Path,
    admin_headers: Headers,
) -> None:
    user = await marked_user(services, make_user)
    own = await login(MARKER_EMAIL)
    # The schema changes under stored data: department becomes a number.
    schema = policy_dir / "schema.cedarschema"
    schema.write_text(schema.read_text().replace("department?: String", "department?: Long"))
    reloaded = await client.post("/authz/policies/reload", headers=admin_headers)
    assert reloaded.status_code == 200, reloaded.text
    me = {"type": "User", "id": str(user.id)}
    for headers, body in (
        (own, {"action": "users:read", "resource": me}),
        (admin_headers, {"principal": me, "action": "users:read", "resource": me}),
    ):
        response = await client.post("/authz/check", headers=headers, json=body)
        assert response.status_code == 422, response.text
        assert detail(response) == {
            "code": "AUTHZ_CHECK_INVALID",
            "message": "The stored attributes of the principal (User) do not fit the policy "
            "schema: attribute `department` should be a long, not a string.",
        }
        assert_no_marker(response)
    assert str(user.id) not in json.dumps(detail(response))


async def test_route_decisions_on_stored_attributes_that_no_longer_fit_are_not_echoed(
    client: httpx.AsyncClient,
    services: AppServices,
    make_user: MakeUser,
    login: Login,
    policy_dir: Path,
    admin_headers: Headers,
) -> None:
    """The 403 of a policy-guarded route says why the policies could not decide, without
    quoting the entities (Cedar's own text lists them, emails and attributes included)."""
    user = await marked_user(services, make_user)
    schema = policy_dir / "schema.cedarschema"
    schema.write_text(schema.read_text().replace("department?: String", "department?: Long"))
    reloaded = await client.post("/authz/policies/reload", headers=admin_headers)
    assert reloaded.status_code == 200, reloaded.text
    response = await client.get(f"/users/{user.id}", headers=admin_headers)
    assert response.status_code == 403, response.text
    body = detail(response)
    assert body["code"] == "POLICY_DENIED"
    assert body["errors"] == [
        "The stored attributes of the resource (User) do not fit the policy schema: attribute "
        "`department` should be a long, not a string."
    ]
    assert_no_marker(response)
