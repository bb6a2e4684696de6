"""authsvc.client.TokenVerifier against the real app (in-process) and its metadata."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from authsvc.client import InvalidToken, TokenVerifier
from authsvc.services.container import AppServices
from tests.conftest import Login, MakeUser

ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        yield client


@pytest.fixture
def verifier(http: httpx.AsyncClient) -> TokenVerifier:
    return TokenVerifier(issuer=ISSUER, audience="authsvc", http=http, min_refetch_seconds=60)


@pytest.fixture
async def token(make_user: MakeUser, login: Login) -> str:
    await make_user("client@example.com")
    return (await login("client@example.com"))["Authorization"][7:]


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_metadata_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/openid-configuration")
    document = response.json()
    assert document["issuer"] == ISSUER
    assert document["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert document["token_endpoint"] == f"{ISSUER}/auth/token"
    assert document["grant_types_supported"] == [
        "password",
        "refresh_token",
        "client_credentials",
        "urn:authsvc:params:oauth:grant-type:mfa",
    ]
    assert document["introspection_endpoint"] == f"{ISSUER}/auth/introspect"
    assert document["revocation_endpoint"] == f"{ISSUER}/auth/revoke"
    assert document["access_token_signing_alg_values_supported"] == ["RS256"]


async def test_verifies_and_caches_keys(verifier: TokenVerifier, token: str) -> None:
    for _ in range(20):
        claims = await verifier.verify(token)
    assert claims["aud"] == "authsvc" and claims["roles"] == []
    assert verifier.fetches == 1


async def test_refusals(
    verifier: TokenVerifier, token: str, services: AppServices, http: httpx.AsyncClient
) -> None:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    user_id = claims["sub"]
    expired = services.codec.issue(user_id, now=time.time() - 3600).token
    forged = f"{header}.{b64({**claims, 'sub': 'someone-else'})}.{signature}"
    none_alg = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': 'x'})}.{payload}."
    wrong_typ = f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': 'x'})}.{payload}.{signature}"
    hs256 = f"{b64({'alg': 'HS256', 'typ': 'at+jwt'})}.{payload}.{signature}"
    for bad in (expired, forged, none_alg, wrong_typ, hs256, "garbage", ""):
        with pytest.raises(InvalidToken):
            await verifier.verify(bad)
    other_audience = TokenVerifier(issuer=ISSUER, audience="another-api", http=http)
    with pytest.raises(InvalidToken):
        await other_audience.verify(token)
    other_issuer = TokenVerifier(issuer="https://elsewhere.example.com", audience="authsvc",
                                 http=http)  # fmt: skip
    with pytest.raises(InvalidToken, match="another issuer"):
        await other_issuer.verify(token)


async def test_unknown_kids_refetch_at_most_once_per_interval(
    verifier: TokenVerifier, token: str
) -> None:
    await verifier.verify(token)
    header, payload, signature = token.split(".")
    for i in range(10):
        forged_header = b64({"alg": "RS256", "typ": "at+jwt", "kid": f"forged-{i}"})
        with pytest.raises(InvalidToken, match="unknown key id"):
            await verifier.verify(f"{forged_header}.{payload}.{signature}")
    assert verifier.fetches == 1  # the first fetch was under a minute ago: no new ones


async def test_unreachable_issuer_is_a_refusal_not_a_crash() -> None:
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as dead:
        verifier = TokenVerifier(issuer="http://127.0.0.1:9", audience="authsvc", http=dead)
        token = f"{b64({'alg': 'RS256', 'typ': 'at+jwt', 'kid': 'k'})}.{b64({})}.c2ln"
        with pytest.raises(InvalidToken, match="cannot fetch"):
            await verifier.verify(token)


def test_the_client_needs_none_of_the_server_dependencies() -> None:
    code = (
        "import sys, authsvc.client\n"
        "heavy = {'fastapi', 'sqlalchemy', 'fastapi_users', 'jose', 'passlib', 'slowapi'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
