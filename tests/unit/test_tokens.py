"""AccessTokenCodec: RFC 9068 tokens from python-jose, and everything verification refuses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi_users.jwt import generate_jwt
from jose import jwt as jose_jwt

from authsvc.security.keys import (
    Algorithm,
    KeyLoadError,
    KeyRing,
    SigningKey,
    generate_private_pem,
    load_or_create_signing_key,
    signing_key_from_pem,
    thumbprint,
)
from authsvc.security.tokens import AccessTokenCodec, InvalidTokenError

ISSUER = "https://auth.example.com"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def unb64(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


@pytest.fixture(scope="module", params=["RS256", "ES256"])
def pem(request: pytest.FixtureRequest) -> tuple[Algorithm, bytes]:
    alg: Algorithm = request.param
    return alg, generate_private_pem(alg)


@pytest.fixture
def key(pem: tuple[Algorithm, bytes]) -> SigningKey:
    return signing_key_from_pem(pem[1], pem[0])


@pytest.fixture
def codec(key: SigningKey) -> AccessTokenCodec:
    return AccessTokenCodec(
        KeyRing([key]), issuer=ISSUER, audience="api", lifetime_seconds=300, client_id="app"
    )


def sign(key: SigningKey, claims: dict[str, Any], **headers: Any) -> str:
    token: str = jose_jwt.encode(
        claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, **headers}
    )
    return token


def claims_for(codec: AccessTokenCodec, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "user-1", "aud": "api", "iat": now, "exp": now + 60}
    claims["jti"] = "j" * 32
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_round_trip_and_rfc9068_shape(codec: AccessTokenCodec, key: SigningKey) -> None:
    issued = codec.issue("user-1")
    header = pyjwt.get_unverified_header(issued.token)
    assert header == {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
    claims = codec.verify(issued.token)
    assert claims["sub"] == "user-1" and claims["iss"] == ISSUER and claims["aud"] == "api"
    assert claims["client_id"] == "app" and claims["jti"] == issued.jti
    assert claims["exp"] - claims["iat"] == 300 == issued.expires_in


def test_jti_is_unique(codec: AccessTokenCodec) -> None:
    assert len({codec.issue("u").jti for _ in range(50)}) == 50


def test_tampered_payload_and_signature(codec: AccessTokenCodec) -> None:
    header, payload, signature = codec.issue("user-1").token.split(".")
    forged = b64json({**unb64(payload), "sub": "admin"})
    with pytest.raises(InvalidTokenError):
        codec.verify(f"{header}.{forged}.{signature}")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[0] ^= 1
    with pytest.raises(InvalidTokenError):
        codec.verify(f"{header}.{payload}.{b64url(bytes(raw))}")


def test_expired(codec: AccessTokenCodec) -> None:
    old = codec.issue("user-1", now=time.time() - 3600).token
    with pytest.raises(InvalidTokenError):
        codec.verify(old)


def test_alg_none(codec: AccessTokenCodec, key: SigningKey) -> None:
    payload = codec.issue("user-1").token.split(".")[1]
    for header in (
        {"alg": "none", "typ": "at+jwt", "kid": key.kid},
        {"alg": "None", "typ": "at+jwt", "kid": key.kid},
    ):
        with pytest.raises(InvalidTokenError):
            codec.verify(f"{b64json(header)}.{payload}.")


def test_hs256_with_the_public_key_as_secret(
    codec: AccessTokenCodec, key: SigningKey, pem: tuple[Algorithm, bytes]
) -> None:
    private = serialization.load_pem_private_key(pem[1], password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64json({'alg': 'HS256', 'typ': 'at+jwt', 'kid': key.kid})}.{b64json(claims_for(codec))}"
    )
    for secret in (public_pem, public_pem.strip(), json.dumps(key.public_jwk).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidTokenError):
            codec.verify(f"{signing_input}.{b64url(mac)}")


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "another-api"},
        {"iss": "https://evil.example.com"},
        {"exp": None},
        {"iat": None},
        {"sub": None},
        {"jti": None},
        {"aud": None},
        {"nbf": int(time.time()) + 3600},
    ],
)
def test_wrong_or_missing_claims(
    codec: AccessTokenCodec, key: SigningKey, changes: dict[str, Any]
) -> None:
    assert codec.verify(sign(key, claims_for(codec), typ="at+jwt"))["sub"] == "user-1"
    with pytest.raises(InvalidTokenError):
        codec.verify(sign(key, claims_for(codec, **changes), typ="at+jwt"))


@pytest.mark.parametrize("typ", ["JWT", None, "refresh+jwt"])
def test_other_token_types(codec: AccessTokenCodec, key: SigningKey, typ: str | None) -> None:
    headers = {"typ": typ} if typ else {}
    token = sign(key, claims_for(codec), **headers)
    if typ is None:
        # python-jose adds typ "JWT" by default; the codec wants at+jwt either way.
        assert pyjwt.get_unverified_header(token).get("typ") != "at+jwt"
    with pytest.raises(InvalidTokenError):
        codec.verify(token)


def test_unknown_kid_and_foreign_key_with_our_kid(codec: AccessTokenCodec, key: SigningKey) -> None:
    other = signing_key_from_pem(generate_private_pem(key.alg), key.alg)
    with pytest.raises(InvalidTokenError):
        codec.verify(sign(other, claims_for(codec), typ="at+jwt"))
    impostor = jose_jwt.encode(
        claims_for(codec),
        other.private_key,
        algorithm=key.alg,
        headers={"kid": key.kid, "typ": "at+jwt"},
    )
    with pytest.raises(InvalidTokenError):
        codec.verify(impostor)


@pytest.mark.parametrize(
    "garbage", ["", "abc", "a.b.c", "....", "eyJ.eyJ.sig", "\u00e9.\u00e9.\u00e9"]
)
def test_garbage(codec: AccessTokenCodec, garbage: str) -> None:
    with pytest.raises(InvalidTokenError):
        codec.verify(garbage)


def test_fastapi_users_hs256_tokens_are_refused(codec: AccessTokenCodec) -> None:
    secret = "s" * 40
    reset = generate_jwt({"sub": "user-1", "aud": "fastapi-users:reset"}, secret, 60)
    with pytest.raises(InvalidTokenError):
        codec.verify(reset)


def test_jwks_has_public_members_only_and_verifies_with_pyjwt(
    codec: AccessTokenCodec, key: SigningKey
) -> None:
    (entry,) = KeyRing([key]).jwks()["keys"]
    assert entry["kid"] == key.kid and entry["alg"] == key.alg and entry["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(entry)
    token = codec.issue("user-1").token
    claims = pyjwt.decode(
        token, pyjwt.PyJWK(entry).key, algorithms=[key.alg], audience="api", issuer=ISSUER
    )
    assert claims["sub"] == "user-1"


def test_key_ring_lists_newest_first_and_verifies_older_keys(key: SigningKey) -> None:
    newer = signing_key_from_pem(generate_private_pem(key.alg), key.alg)
    old_codec = AccessTokenCodec(
        KeyRing([key]), issuer=ISSUER, audience="api", lifetime_seconds=60, client_id="a"
    )
    ring = KeyRing([key, newer])
    codec = AccessTokenCodec(
        ring, issuer=ISSUER, audience="api", lifetime_seconds=60, client_id="a"
    )
    assert ring.active is newer
    assert [k["kid"] for k in ring.jwks()["keys"]] == [newer.kid, key.kid]
    assert codec.verify(old_codec.issue("u").token)["sub"] == "u"
    assert pyjwt.get_unverified_header(codec.issue("u").token)["kid"] == newer.kid
    with pytest.raises(ValueError):
        KeyRing([])


def test_kid_is_the_rfc7638_thumbprint(key: SigningKey) -> None:
    jwk = key.public_jwk
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    expected = b64url(hashlib.sha256(canonical.encode()).digest())
    assert key.kid == expected == thumbprint(jwk)


def test_key_file_is_created_private_once_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "key.pem"
    first = load_or_create_signing_key(path, "ES256")
    assert path.stat().st_mode & 0o777 == 0o600
    second = load_or_create_signing_key(path, "ES256")
    assert first.kid == second.kid
    assert [p.name for p in path.parent.iterdir()] == ["key.pem"]  # no temp files left


@pytest.mark.parametrize(
    "content",
    [b"", b"not a pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
)
def test_corrupt_key_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(KeyLoadError, match="key.pem"):
        load_or_create_signing_key(path, "RS256")


def test_a_public_key_file_is_refused(tmp_path: Path) -> None:
    private = serialization.load_pem_private_key(generate_private_pem("RS256"), password=None)
    path = tmp_path / "public.pem"
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyLoadError, match="public key only"):
        load_or_create_signing_key(path, "RS256")
