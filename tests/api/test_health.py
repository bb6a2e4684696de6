"""Probes, the JWKS document, and how unexpected errors are answered."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import jwt
import pytest

from authsvc.config import Settings
from authsvc.main import create_app
from tests.conftest import Login, MakeUser


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


async def test_readyz_when_the_database_is_down(settings: Settings) -> None:
    # A port nothing listens on: the probe must answer 503 with a code, quickly.
    down = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://nobody@127.0.0.1:9/none"}
    )
    app = create_app(down)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/readyz")
    await app.state.services.engine.dispose()
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "DATABASE_UNAVAILABLE"
    assert "127.0.0.1" not in response.text


async def test_jwks_verifies_our_tokens_with_another_library(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("jwks@example.com")
    token = (await login("jwks@example.com"))["Authorization"].removeprefix("Bearer ")
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    document = response.json()
    (key,) = document["keys"]
    assert {"kty", "kid", "alg", "use", "n", "e"} <= set(key)
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    claims = jwt.decode(
        token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience="authsvc",
        issuer="http://127.0.0.1:8000",
        options={"require": ["exp", "iat", "sub", "jti"]},
    )
    assert claims["aud"] == "authsvc"


class TestES256:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"signing_algorithm": "ES256", "signing_key_file": None}

    async def test_es256_is_selectable(
        self, client: httpx.AsyncClient, make_user: MakeUser, login: Login
    ) -> None:
        await make_user("ec@example.com")
        token = (await login("ec@example.com"))["Authorization"].removeprefix("Bearer ")
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        (key,) = (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience="authsvc")
        assert "sub" in claims
        me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200


async def test_unexpected_errors_are_a_generic_500(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="authsvc.errors"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom")
    await app.state.services.engine.dispose()
    assert response.status_code == 500
    assert response.json() == {
        "detail": {"code": "INTERNAL_ERROR", "message": "An unexpected error occurred."}
    }
    assert "internal detail" not in response.text
    assert any("RuntimeError" in record.getMessage() for record in caplog.records)


async def test_openapi_describes_every_route(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operations = {
        (method.upper(), path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    expected = {
        ("POST", "/auth/token"),
        ("POST", "/auth/register"),
        ("POST", "/auth/request-verify-token"),
        ("POST", "/auth/verify"),
        ("POST", "/auth/forgot-password"),
        ("POST", "/auth/reset-password"),
        ("GET", "/users"),
        ("GET", "/users/me"),
        ("PATCH", "/users/me"),
        ("GET", "/users/{user_id}"),
        ("PATCH", "/users/{user_id}"),
        ("DELETE", "/users/{user_id}"),
        ("GET", "/users/{user_id}/roles"),
        ("PUT", "/users/{user_id}/roles/{role}"),
        ("DELETE", "/users/{user_id}/roles/{role}"),
        ("GET", "/users/{user_id}/permissions"),
        ("GET", "/roles"),
        ("POST", "/roles"),
        ("GET", "/roles/{role}"),
        ("PATCH", "/roles/{role}"),
        ("DELETE", "/roles/{role}"),
        ("PUT", "/roles/{role}/permissions/{permission}"),
        ("DELETE", "/roles/{role}/permissions/{permission}"),
        ("GET", "/roles/{role}/users"),
        ("GET", "/permissions"),
        ("POST", "/permissions"),
        ("GET", "/audit"),
        ("GET", "/audit/verify"),
        ("POST", "/auth/introspect"),
        ("POST", "/auth/revoke"),
        ("POST", "/auth/revert-email"),
        ("POST", "/auth/confirm-email"),
        ("POST", "/clients"),
        ("GET", "/clients"),
        ("DELETE", "/clients/{client_id}"),
        ("GET", "/keys"),
        ("POST", "/keys/rotate"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/logout-all"),
        ("GET", "/users/me/sessions"),
        ("DELETE", "/users/me/sessions/{session_id}"),
        ("GET", "/users/{user_id}/sessions"),
        ("DELETE", "/users/{user_id}/sessions"),
        ("GET", "/users/{user_id}/login-throttle"),
        ("DELETE", "/users/{user_id}/login-throttle"),
        ("GET", "/users/{user_id}/mfa"),
        ("DELETE", "/users/{user_id}/mfa"),
        ("GET", "/users/me/mfa"),
        ("POST", "/users/me/mfa/totp"),
        ("POST", "/users/me/mfa/totp/confirm"),
        ("DELETE", "/users/me/mfa/totp"),
        ("POST", "/users/me/mfa/recovery-codes"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/.well-known/openid-configuration"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/authz/check"),
        ("POST", "/authz/check/batch"),
        ("GET", "/authz/policies"),
        ("POST", "/authz/policies/reload"),
    }
    assert set(operations) == expected
    for key, operation in operations.items():
        # fastapi-users' generated names look like "Users:Patch Current User".
        assert ":" not in operation["summary"], key


async def test_openapi_describes_422_as_it_is_answered(client: httpx.AsyncClient) -> None:
    from authsvc.api.errors import ValidationErrorBody

    schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    documented = components["HTTPValidationError"]["properties"]["detail"]["$ref"]
    assert documented.endswith("/ValidationErrorDetail")
    assert set(components["ValidationErrorDetail"]["properties"]) == {"code", "message", "errors"}
    answered = await client.post("/auth/register", json={"email": "nope"})
    assert answered.status_code == 422
    body = ValidationErrorBody.model_validate(answered.json())
    assert body.detail.code == "VALIDATION_ERROR" and body.detail.errors
