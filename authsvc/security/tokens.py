"""Access tokens: RFC 9068 JWTs, signed and verified with python-jose.

Pure: no FastAPI, no database. Verification never trusts the token's own header beyond picking
the key: the algorithm must be the one that key was made for (an explicit allow-list of one), so
``alg: none`` and HS256-signed-with-our-public-key forgeries fail before any signature check.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jose import JWTError, jwt

from authsvc.security.keys import KeyRing

ACCESS_TOKEN_TYPE = "at+jwt"  # RFC 9068 §2.1
# python-jose checks these; "require_*" makes a missing claim an error, not a pass.
_VERIFY_OPTIONS = {
    "verify_signature": True,
    "verify_aud": True,
    "verify_iat": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "require_aud": True,
    "require_iat": True,
    "require_exp": True,
    "require_iss": True,
    "require_sub": True,
    "require_jti": True,
    "leeway": 0,
}


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or not meant for us. The reason is for logs."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    jti: str


class AccessTokenCodec:
    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        client_id: str,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime_seconds = lifetime_seconds
        self.client_id = client_id

    def issue(
        self,
        subject: str,
        *,
        now: float | None = None,
        extra: Mapping[str, Any] | None = None,
        client_id: str | None = None,
    ) -> IssuedToken:
        """``extra`` adds claims (roles, permissions, ver); registered claims always win."""
        issued_at = int(now if now is not None else time.time())
        jti = uuid.uuid4().hex
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.audience,
            "iat": issued_at,
            "exp": issued_at + self.lifetime_seconds,
            "jti": jti,
            "client_id": client_id or self.client_id,
        }
        claims = {**(extra or {}), **claims}
        key = self.keys.active
        token = jwt.encode(
            claims,
            key.private_key,
            algorithm=key.alg,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        return IssuedToken(token=token, expires_in=self.lifetime_seconds, jti=jti)

    def verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except JWTError as exc:
            raise InvalidTokenError("malformed token") from exc
        # RFC 9068 §4: reject tokens whose typ is not at+jwt (other token kinds, confusion).
        if str(header.get("typ", "")).lower() not in (ACCESS_TOKEN_TYPE, "application/at+jwt"):
            raise InvalidTokenError("not an access token")
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidTokenError("unknown key id")
        if header.get("alg") != key.alg:
            raise InvalidTokenError("algorithm not allowed")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.alg],
                audience=self.audience,
                issuer=self.issuer,
                options=_VERIFY_OPTIONS,
            )
        except JWTError as exc:
            raise InvalidTokenError(str(exc)) from exc
        return claims
