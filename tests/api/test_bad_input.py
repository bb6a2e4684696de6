"""Bad input: each case gets a 4xx with a stable code, never a 500, never a partial write."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from authsvc.config import Settings
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser, row_count


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


# --- request bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"email": "a@example.com", "password": ',  # truncated JSON
        b"not json at all",
        b"[1, 2, 3]",
        b'"just a string"',
        b"\xff\xfe\x00garbage",
    ],
)
async def test_malformed_json_is_422(
    client: httpx.AsyncClient, services: AppServices, body: bytes
) -> None:
    response = await client.post(
        "/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "VALIDATION_ERROR"
    assert await row_count(services) == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": 12, "password": PASSWORD}, "email"),
        ({"email": ["a@example.com"], "password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": 12345678}, "password"),
        ({"email": "a@example.com", "password": None}, "password"),
        ({"email": "a@example.com"}, "password"),
        ({"password": PASSWORD}, "email"),
        ({"email": "a@example.com", "password": PASSWORD, "nickname": "x"}, "nickname"),
        ({"email": "a@example.com", "password": PASSWORD, "is_verified": True}, ""),
    ],
)
async def test_register_wrong_types_missing_and_unknown_fields(
    client: httpx.AsyncClient, services: AppServices, payload: dict[str, Any], field: str
) -> None:
    response = await client.post("/auth/register", json=payload)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "VALIDATION_ERROR"
    assert field in detail["message"]
    assert await row_count(services) == 0


@pytest.mark.parametrize(
    "email",
    [
        "",
        "plainaddress",
        "@example.com",
        "a@",
        "a@@example.com",
        "a b@example.com",
        "a@example..com",
        "x" * 300 + "@example.com",
        "a@" + "b" * 1000 + ".com",
    ],
)
async def test_register_invalid_emails(
    client: httpx.AsyncClient, services: AppServices, email: str
) -> None:
    response = await client.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 422
    assert response.json()["detail"]["code"] == "VALIDATION_ERROR"
    assert await row_count(services) == 0


@pytest.mark.parametrize(
    ("password", "status", "reason_part"),
    [
        ("", 400, "at least 15"),
        ("short", 400, "at least 15"),
        ("x" * 129, 400, "at most 128"),
        ("p" * 1000, 400, "at most 128"),
        ("p" * 5000, 422, None),  # past the schema's hard cap: never hashed at all
        ("passwordpassword", 400, "too common"),
        ("        ", 400, ""),
    ],
)
async def test_register_bad_passwords(
    client: httpx.AsyncClient,
    services: AppServices,
    password: str,
    status: int,
    reason_part: str | None,
) -> None:
    response = await client.post(
        "/auth/register", json={"email": "pw@example.com", "password": password}
    )
    assert response.status_code == status
    detail = response.json()["detail"]
    if status == 400:
        assert detail["code"] == "REGISTER_INVALID_PASSWORD"
        assert reason_part in detail["reason"]
    else:
        assert detail["code"] == "VALIDATION_ERROR"
        assert password not in response.text
    assert await row_count(services) == 0


async def test_sixty_four_character_password_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/register", json={"email": "long@example.com", "password": "q" * 63 + "!"}
    )
    assert response.status_code == 202


async def test_validation_errors_never_echo_the_password(client: httpx.AsyncClient) -> None:
    secret = "my-very-secret-passphrase"
    response = await client.post(
        "/auth/register", json={"email": "not-an-email", "password": secret, "extra": secret}
    )
    assert response.status_code == 422
    assert secret not in response.text


async def test_ten_megabyte_body_is_413(client: httpx.AsyncClient, services: AppServices) -> None:
    big = {"email": "big@example.com", "password": PASSWORD, "pad": "x" * 10_000_000}
    response = await client.post("/auth/register", json=big)
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "PAYLOAD_TOO_LARGE"
    assert await row_count(services) == 0


async def test_streamed_body_without_length_is_cut_off(
    client: httpx.AsyncClient, services: AppServices
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"email": "stream@example.com", "password": "'
        for _ in range(200):
            yield b"x" * 65_536
        yield b'"}'

    response = await client.post(
        "/auth/register", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "PAYLOAD_TOO_LARGE"
    assert await row_count(services) == 0


async def test_over_long_token_form_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "password", "username": "a" * 1000, "password": PASSWORD},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_patch_me_wrong_types(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("types@example.com")
    headers = await login("types@example.com")
    for payload in ({"email": 5}, {"email": "nope"}, {"password": ["a"]}):
        response = await client.patch("/users/me", headers=headers, json=payload)
        assert response.status_code == 422, payload
        assert response.json()["detail"]["code"] == "VALIDATION_ERROR"
    me = (await client.get("/users/me", headers=headers)).json()
    assert me["email"] == "types@example.com"


# --- bearer tokens ----------------------------------------------------------------------------


@pytest.fixture
async def good_token(make_user: MakeUser, login: Login) -> str:
    await make_user("tok@example.com")
    return (await login("tok@example.com"))["Authorization"].removeprefix("Bearer ")


async def assert_rejected(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, token
    assert response.json()["detail"]["code"] == "TOKEN_INVALID"
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_good_token_passes(client: httpx.AsyncClient, good_token: str) -> None:
    response = await client.get("/users/me", headers={"Authorization": f"Bearer {good_token}"})
    assert response.status_code == 200


async def test_tampered_token(client: httpx.AsyncClient, good_token: str) -> None:
    header, payload, signature = good_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "00000000-0000-0000-0000-000000000000"
    forged_payload = b64url(json.dumps(claims).encode())
    await assert_rejected(client, f"{header}.{forged_payload}.{signature}")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    await assert_rejected(client, f"{header}.{payload}.{flipped}")


async def test_expired_token(
    client: httpx.AsyncClient, services: AppServices, make_user: MakeUser
) -> None:
    user = await make_user("old@example.com")
    expired = services.codec.issue(str(user.id), now=time.time() - 3600).token
    await assert_rejected(client, expired)


async def test_alg_none_token(client: httpx.AsyncClient, good_token: str) -> None:
    _, payload, _ = good_token.split(".")
    header = b64url(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    await assert_rejected(client, f"{header}.{payload}.")
    kid = json.loads(base64.urlsafe_b64decode(good_token.split(".")[0] + "=="))["kid"]
    header_kid = b64url(json.dumps({"alg": "none", "typ": "at+jwt", "kid": kid}).encode())
    await assert_rejected(client, f"{header_kid}.{payload}.")


async def test_hs256_signed_with_the_public_key(
    client: httpx.AsyncClient, good_token: str, settings: Settings, services: AppServices
) -> None:
    """The classic algorithm confusion: our public key used as an HMAC secret."""
    private = serialization.load_pem_private_key(
        settings.resolved_signing_key_file.read_bytes(), password=None
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = json.loads(base64.urlsafe_b64decode(good_token.split(".")[1] + "=="))
    header = {"alg": "HS256", "typ": "at+jwt", "kid": services.keys.active.kid}
    await assert_rejected(client, hs256(header, claims, public_pem))
    jwk_json = json.dumps(services.keys.active.public_jwk).encode()
    await assert_rejected(client, hs256(header, claims, jwk_json))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer a.b",
        "Bearer ....",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "a" * 9000,
    ],
)
async def test_garbage_authorization_headers(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/users/me", headers={"Authorization": value})
    assert response.status_code == 401
