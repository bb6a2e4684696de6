"""Authorization server metadata (RFC 8414): one document at both well-known locations,
generated from the grant registry and the configured issuer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from authsvc.authz.permissions import BUILTIN_PERMISSIONS
from authsvc.config import issuer_for_bind

ISSUER = "https://auth.example.com"
LOCATIONS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
ANONYMOUS_BUDGET = 2


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"issuer": ISSUER, "ratelimit_anonymous": f"{ANONYMOUS_BUDGET}/minute"}


async def test_both_locations_answer_the_same_document(client: httpx.AsyncClient) -> None:
    answers = [await client.get(path) for path in LOCATIONS]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].content == answers[1].content
    assert answers[0].headers["content-type"] == "application/json"
    document = answers[0].json()
    assert document["issuer"] == ISSUER  # RFC 8414 §3.3: the configured issuer, exactly
    assert document["token_endpoint"] == f"{ISSUER}/auth/token"
    assert document["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert document["introspection_endpoint"] == f"{ISSUER}/auth/introspect"
    assert document["revocation_endpoint"] == f"{ISSUER}/auth/revoke"
    assert document["grant_types_supported"] == [
        "password",
        "refresh_token",
        "client_credentials",
        "urn:authsvc:params:oauth:grant-type:mfa",
    ]
    assert document["scopes_supported"] == sorted(BUILTIN_PERMISSIONS)
    assert document["access_token_signing_alg_values_supported"] == ["RS256"]


async def test_grant_types_come_from_the_registry(app: FastAPI, client: httpx.AsyncClient) -> None:
    registered = app.state.services.grants.grant_types
    for path in LOCATIONS:
        assert (await client.get(path)).json()["grant_types_supported"] == registered


async def test_not_rate_limited_and_cacheable(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.78", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for path in LOCATIONS:
            answers = [await client.get(path) for _ in range(ANONYMOUS_BUDGET * 3)]
            assert {a.status_code for a in answers} == {200}, path
            assert answers[-1].headers["cache-control"] == "public, max-age=300"
        # The same address is limited elsewhere: the budget was small, not absent.
        limited = [await client.get("/users/me") for _ in range(ANONYMOUS_BUDGET + 1)]
        assert limited[-1].status_code == 429


async def test_both_locations_are_documented_without_a_429(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in LOCATIONS:
        operation = paths[path]["get"]
        assert "oauth-authorization-server" in operation["description"]
        assert "429" not in operation["responses"], path


@pytest.mark.parametrize(
    ("host", "port", "issuer"),
    [
        ("127.0.0.1", 9000, "http://127.0.0.1:9000"),
        ("localhost", 8080, "http://localhost:8080"),
        ("auth.internal", 8000, "http://auth.internal:8000"),
        ("0.0.0.0", 8000, "http://127.0.0.1:8000"),  # the Docker image's bind: as before
        ("::", 9000, "http://127.0.0.1:9000"),
        ("", 9000, "http://127.0.0.1:9000"),
        ("::1", 9000, "http://[::1]:9000"),
        ("[::1]", 9000, "http://[::1]:9000"),
        ("10.1.2.3", 443, "http://10.1.2.3:443"),
    ],
)
def test_the_issuer_of_a_bind(host: str, port: int, issuer: str) -> None:
    assert issuer_for_bind(host, port) == issuer
