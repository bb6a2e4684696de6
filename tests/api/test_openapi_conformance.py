"""The answers are what the OpenAPI document says they are: one regression test for each
mismatch the full schemathesis run (tests/api/test_schemathesis.py) found."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.openapi_helpers import fetch_document as _document
from tests.openapi_helpers import responses as _responses

ERROR_BODY = "#/components/schemas/ErrorBody"


# --- 405 and 404: our error shape, and an Allow header naming every method of the path -------


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/roles", {"GET", "POST"}),
        ("/roles/user", {"GET", "PATCH", "DELETE"}),
        (f"/users/{uuid.UUID(int=7)}", {"GET", "PATCH", "DELETE"}),
        ("/users/me", {"GET", "PATCH"}),
        ("/permissions", {"GET", "POST"}),
        ("/clients", {"GET", "POST"}),
        ("/roles/user/permissions/users:read", {"PUT", "DELETE"}),
    ],
)
async def test_405_allows_every_method_of_the_path_in_our_shape(
    client: httpx.AsyncClient, admin_headers: dict[str, str], path: str, allowed: set[str]
) -> None:
    response = await client.request("OPTIONS", path, headers=admin_headers)
    assert response.status_code == 405, response.text
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
    assert response.json()["detail"]["code"] == "METHOD_NOT_ALLOWED"


async def test_unknown_path_is_404_in_our_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/thing")
    assert response.status_code == 404
    assert response.json() == {"detail": {"code": "NOT_FOUND", "message": "Not Found"}}


async def test_me_is_not_a_user_id(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """`/users/me/sessions` has no DELETE; it used to be taken for `/users/{user_id}/sessions`
    with user_id "me" (a 422). A user id is a UUID in the route itself."""
    response = await client.delete("/users/me/sessions", headers=admin_headers)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET"
    deleted_me = await client.delete("/users/me", headers=admin_headers)
    assert deleted_me.status_code == 405, deleted_me.text
    assert deleted_me.headers["allow"] == "GET, PATCH"


async def test_unreadable_body_is_a_422_like_invalid_json(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(
        "/clients",
        headers={**admin_headers, "Content-Type": "application/json"},
        content=b"\xff\xfe{",
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["code"] == "VALIDATION_ERROR"
    assert response.json()["detail"]["errors"][0]["loc"] == ["body"]


# --- fastapi-users' errors in our shape ---------------------------------------------------------


async def test_fastapi_users_errors_are_mapped_to_our_shape(client: httpx.AsyncClient) -> None:
    verify = await client.post("/auth/verify", json={"token": "not-a-token"})
    assert verify.status_code == 400
    assert verify.json()["detail"]["code"] == "VERIFY_USER_BAD_TOKEN"
    assert verify.json()["detail"]["message"]
    reset = await client.post("/auth/reset-password", json={"token": "x", "password": "pw"})
    assert reset.status_code == 400
    assert reset.json()["detail"]["code"] == "RESET_PASSWORD_BAD_TOKEN"
    # /users/me is ours (the one caller resolver): the same refusal as every guarded route.
    anonymous = await client.get("/users/me")
    assert anonymous.status_code == 401
    assert anonymous.json()["detail"]["code"] == "NOT_AUTHENTICATED"


# --- the documented error answers ---------------------------------------------------------------


async def test_domain_422s_match_the_documented_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    from authsvc.api.errors import ValidationErrorBody

    document = await _document(client)
    detail = document["components"]["schemas"]["ValidationErrorDetail"]
    assert "errors" not in detail.get("required", [])
    answered = await client.get("/users", params={"cursor": "bm9wZQ"}, headers=admin_headers)
    assert answered.status_code == 422
    assert answered.json()["detail"]["code"] == "USER_CURSOR_INVALID"
    ValidationErrorBody.model_validate(answered.json())


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("PATCH", "/users/{user_id}", {"401", "403", "404", "409", "429", "503"}),
        ("DELETE", "/users/{user_id}", {"401", "403", "404", "409"}),
        ("PATCH", "/roles/{role}", {"401", "403", "404", "409"}),
        ("DELETE", "/roles/{role}", {"403", "404", "409"}),
        ("POST", "/roles", {"401", "403", "404", "409", "413"}),
        ("POST", "/permissions", {"401", "403", "409"}),
        ("POST", "/clients", {"401", "403", "404"}),
        ("POST", "/keys/rotate", {"401", "403", "409"}),
        ("DELETE", "/users/me/sessions/{session_id}", {"401", "404"}),
        ("GET", "/metrics", {"401", "404"}),
        ("POST", "/auth/revert-email", {"400", "409"}),
    ],
)
async def test_error_statuses_are_documented(
    client: httpx.AsyncClient, method: str, path: str, statuses: set[str]
) -> None:
    answers = _responses(await _document(client), method, path)
    assert statuses <= set(answers), sorted(answers)
    for status in statuses:
        schema = answers[status]["content"]["application/json"]["schema"]
        assert schema["$ref"] == ERROR_BODY, (status, schema)


async def test_documented_statuses_stay_truthful(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    healthz = _responses(document, "GET", "/healthz")
    assert set(healthz) == {"200"}  # no database, no limit, no guard
    roles = _responses(document, "GET", "/roles")
    assert "404" not in roles  # no path parameter, nothing looked up
    assert "409" not in roles
    assert "503" in roles and "429" in roles


async def test_oauth_client_errors_are_documented_in_their_shape(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    for path in ("/auth/revoke", "/auth/introspect"):
        schema = _responses(document, "POST", path)["401"]["content"]["application/json"]
        assert schema["schema"]["$ref"] == "#/components/schemas/OAuthErrorBody"
    answered = await client.post("/auth/introspect", data={"token": "x", "client_id": "nope",
                                                           "client_secret": "nope"})  # fmt: skip
    assert answered.status_code == 401
    assert answered.json()["error"] == "invalid_client"


async def test_revoke_documents_its_empty_answer(client: httpx.AsyncClient) -> None:
    ok = _responses(await _document(client), "POST", "/auth/revoke")["200"]
    assert "content" not in ok or "application/json" not in ok["content"]
    answered = await client.post("/auth/revoke", data={"token": "unknown"})
    assert answered.status_code == 200 and answered.content == b""


async def test_jwks_and_metrics_document_their_content_types(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    assert set(_responses(document, "GET", "/.well-known/jwks.json")["200"]["content"]) == {
        "application/jwk-set+json"
    }
    assert set(_responses(document, "GET", "/metrics")["200"]["content"]) == {"text/plain"}
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.headers["content-type"].startswith("application/jwk-set+json")


async def test_429_is_documented_where_a_limit_applies(client: httpx.AsyncClient) -> None:
    """The probes and the well-known documents are not rate-limited; the others are."""
    document = await _document(client)
    assert "429" in _responses(document, "POST", "/auth/forgot-password")
    assert "429" in _responses(document, "POST", "/auth/register")
    for path in ("/healthz", "/readyz", "/.well-known/jwks.json", "/metrics"):
        assert "429" not in _responses(document, "GET", path), path


# --- requests the schema calls valid are accepted; those it calls invalid are refused ----------


async def test_register_schema_offers_only_email_and_password(client: httpx.AsyncClient) -> None:
    document = await _document(client)
    ref = document["paths"]["/auth/register"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert set(schema["properties"]) == {"email", "password"}
    assert schema["additionalProperties"] is False
    me_ref = document["paths"]["/users/me"]["patch"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["$ref"]
    me = document["components"]["schemas"][me_ref.rsplit("/", 1)[-1]]
    assert not {"is_active", "is_superuser", "is_verified"} & set(me["properties"])


async def test_empty_cursor_is_refused_by_the_schema(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/users", params={"cursor": ""}, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "VALIDATION_ERROR"
    assert response.json()["detail"]["errors"][0]["loc"] == ["query", "cursor"]


async def test_role_permission_and_parent_names_are_in_the_schema(
    client: httpx.AsyncClient,
) -> None:
    document = await _document(client)
    create = document["components"]["schemas"]["RoleCreate"]["properties"]
    assert create["permissions"]["items"]["pattern"]
    assert create["parents"]["items"]["pattern"]


async def test_audit_times_refuse_numbers(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    for value in ("0.5", "1700000000"):
        response = await client.get("/audit", params={"until": value}, headers=admin_headers)
        assert response.status_code == 422, (value, response.text)
    fine = await client.get(
        "/audit", params={"until": "2030-01-01T00:00:00+00:00"}, headers=admin_headers
    )
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize("body", [{"email": None}, {"email": None, "current_password": "x"}])
async def test_null_email_on_me_is_a_422_not_a_500(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, Any]
) -> None:
    response = await client.patch("/users/me", json=body, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["errors"][0]["loc"] == ["body", "email"]


@pytest.mark.parametrize("field", ["email", "is_active", "is_superuser", "is_verified"])
async def test_null_fields_on_a_user_are_a_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], make_user: Any, field: str
) -> None:
    user = await make_user("target@example.com")
    response = await client.patch(f"/users/{user.id}", json={field: None}, headers=admin_headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["errors"][0]["loc"] == ["body", field]


async def test_action_pattern_means_the_same_in_python_and_json_schema(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """Python's ``\\s`` matches U+0085 and U+001C..F; JSON Schema's does not: the pattern
    spells its white space out so both refuse the same actions."""
    document = await _document(client)
    pattern = document["components"]["schemas"]["CheckRequest"]["properties"]["action"]["pattern"]
    assert "\\s" not in pattern
    for blank in ("\x85", "\x1c", "\ufeff", " "):
        assert re.match(pattern, f"Ns::Action::a{blank}b") is None
    body = {"action": "Ns::a\x85b", "resource": {"type": "Ns::Thing", "id": "1"}}
    response = await client.post("/authz/check", json=body, headers=admin_headers)
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "VALIDATION_ERROR"


async def test_permission_in_a_path_documents_the_name_rule(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """A name outside the rule was a schema-valid path refused with 422; the document now
    states the rule the route checks (and the route's answer stays the same)."""
    from authsvc.authz.permissions import PERMISSION_NAME

    operations = (await _document(client))["paths"]["/roles/{role}/permissions/{permission}"]
    for method in ("put", "delete"):
        (param,) = [p for p in operations[method]["parameters"] if p["name"] == "permission"]
        assert param["schema"]["pattern"] == PERMISSION_NAME.pattern
    refused = await client.put("/roles/user/permissions/Not%20Valid", headers=admin_headers)
    assert refused.status_code == 422
    assert refused.json()["detail"]["code"] == "PERMISSION_NAME_INVALID"
