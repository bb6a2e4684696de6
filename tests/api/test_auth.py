"""Registration and the OAuth2 password grant at ``POST /auth/token``."""

from __future__ import annotations

import httpx
import jwt
import pytest

from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser, delivered, row_count, token_from_console


def form(username: str, password: str = PASSWORD, grant_type: str = "password") -> dict[str, str]:
    return {"grant_type": grant_type, "username": username, "password": password}


async def register_and_verify(
    client: httpx.AsyncClient,
    services: AppServices,
    capsys: pytest.CaptureFixture[str],
    email: str,
    password: str = PASSWORD,
) -> httpx.Response:
    """Register, then verify through the mailed token: the verify answer (the user)."""
    created = await client.post("/auth/register", json={"email": email, "password": password})
    assert created.status_code == 202, created.text
    token = token_from_console(await delivered(services, capsys), "verify")
    verified = await client.post("/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    return verified


async def test_register_then_login_then_me(
    client: httpx.AsyncClient, services: AppServices, capsys: pytest.CaptureFixture[str]
) -> None:
    created = await client.post(
        "/auth/register", json={"email": "New.User@Example.com", "password": PASSWORD}
    )
    assert created.status_code == 202, created.text
    # AUTHSVC_REQUIRE_VERIFIED_EMAIL (on by default): not before the address is verified.
    unverified = await client.post("/auth/token", data=form("new.user@example.com"))
    assert unverified.status_code == 400
    assert unverified.json()["detail"]["code"] == "EMAIL_NOT_VERIFIED"

    token = token_from_console(await delivered(services, capsys), "verify")
    verified = await client.post("/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["email"] == "New.User@example.com"
    assert (body["is_active"], body["is_superuser"], body["is_verified"]) == (True, False, True)
    assert "hashed_password" not in body and "password" not in body
    assert body["created_at"].endswith(("+00:00", "Z"))

    token = await client.post("/auth/token", data=form("new.user@example.com"))
    assert token.status_code == 200, token.text
    assert token.headers["cache-control"] == "no-store"
    payload = token.json()
    assert payload["token_type"] == "bearer"
    assert payload["expires_in"] == 900
    assert set(payload) == {
        "access_token", "token_type", "expires_in", "refresh_token", "device_token"
    }  # fmt: skip

    me = await client.get(
        "/users/me", headers={"Authorization": f"Bearer {payload['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["id"] == body["id"]


async def test_access_token_claims_follow_rfc9068(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    user = await make_user("claims@example.com")
    response = await client.post("/auth/token", data=form("claims@example.com"))
    token = response.json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    assert header["kid"] == services.keys.active.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == str(user.id)
    assert claims["iss"] == "http://127.0.0.1:8000"
    assert claims["aud"] == "authsvc"
    assert claims["client_id"] == "authsvc"
    assert claims["exp"] - claims["iat"] == 900
    assert len(claims["jti"]) >= 16


async def test_register_duplicate_email_is_refused_case_insensitive(
    client: httpx.AsyncClient, make_user: MakeUser, services: AppServices
) -> None:
    await make_user("taken@example.com")
    response = await client.post(
        "/auth/register", json={"email": "TAKEN@example.com", "password": PASSWORD}
    )
    # Refused without saying so (issue 13); tests/api/test_register.py has the details.
    assert response.status_code == 202
    assert await row_count(services) == 1


async def test_register_cannot_make_a_superuser(
    client: httpx.AsyncClient, services: AppServices
) -> None:
    response = await client.post(
        "/auth/register",
        json={"email": "sneaky@example.com", "password": PASSWORD, "is_superuser": True},
    )
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "VALIDATION_ERROR"
    assert await row_count(services) == 0


async def test_wrong_password_unknown_email_and_inactive_get_one_answer(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    await make_user("real@example.com")
    await make_user("off@example.com", is_active=False)
    answers = [
        await client.post("/auth/token", data=form("real@example.com", "wrong password!")),
        await client.post("/auth/token", data=form("nobody@example.com")),
        await client.post("/auth/token", data=form("off@example.com")),
    ]
    for response in answers:
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_grant"
        assert body["detail"]["code"] == "LOGIN_BAD_CREDENTIALS"
        assert response.headers["cache-control"] == "no-store"
    assert len({r.text for r in answers}) == 1


async def test_token_endpoint_rfc6749_errors(client: httpx.AsyncClient) -> None:
    unsupported = await client.post(
        "/auth/token", data=form("a@example.com", grant_type="authorization_code")
    )
    assert unsupported.status_code == 400
    assert unsupported.json()["error"] == "unsupported_grant_type"

    for missing in ("grant_type", "username", "password"):
        data = form("a@example.com")
        del data[missing]
        response = await client.post("/auth/token", data=data)
        assert response.status_code == 400, missing
        assert response.json()["error"] == "invalid_request"
        assert missing in response.json()["error_description"]

    json_body = await client.post("/auth/token", json=form("a@example.com"))
    assert json_body.status_code == 400
    assert json_body.json()["error"] == "invalid_request"


async def test_long_password_is_not_truncated_at_72_bytes(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    long_password = "p" * 72 + "-the-rest-matters"
    await make_user("long@example.com", long_password)
    ok = await client.post("/auth/token", data=form("long@example.com", long_password))
    assert ok.status_code == 200
    truncated = await client.post("/auth/token", data=form("long@example.com", "p" * 72))
    assert truncated.status_code == 400


async def test_swagger_authorize_points_at_the_token_endpoint(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    flows = schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "auth/token"
    assert "/auth/token" in schema["paths"]


async def test_login_helper_token_works_for_me(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("helper@example.com")
    headers = await login("helper@example.com")
    assert (await client.get("/users/me", headers=headers)).json()["email"] == "helper@example.com"


async def test_request_path_hashing_stays_off_the_event_loop(
    client: httpx.AsyncClient,
    services: AppServices,
    login: Login,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import threading

    loop_thread = threading.get_ident()  # ASGITransport runs the app on this loop
    await register_and_verify(client, services, capsys, "thread@example.com")
    await login("thread@example.com")
    await client.post("/auth/token", data=form("ghost@example.com"))  # dummy verify
    assert services.hasher.worker_threads
    assert loop_thread not in services.hasher.worker_threads


async def test_concurrent_registrations_of_one_address_make_one_account(
    client: httpx.AsyncClient, services: AppServices
) -> None:
    import asyncio

    emails = ["race@example.com", "RACE@example.com", "Race@Example.com", "race@EXAMPLE.com"]
    responses = await asyncio.gather(
        *(client.post("/auth/register", json={"email": e, "password": PASSWORD}) for e in emails)
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 202, 202, 202], [r.text for r in responses]
    assert await row_count(services) == 1
