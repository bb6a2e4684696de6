"""Service clients: registration, client authentication (RFC 6749 §2.3.1), and the
revocation of their access tokens (RFC 7009)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import OAuthClient, RevokedToken, utcnow
from authsvc.errors import OAuthError

# A fixed hash to compare against for unknown client ids, so timing does not tell which exist.
_NO_SUCH_CLIENT = hashlib.sha256(b"no such client").hexdigest()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_client(name: str, permissions: list[str]) -> tuple[OAuthClient, str]:
    secret = secrets.token_urlsafe(32)  # 256 bits, shown once
    client = OAuthClient(
        id=f"svc-{secrets.token_hex(8)}",
        name=name,
        secret_hash=hash_secret(secret),
        permissions=sorted(set(permissions)),
    )
    return client, secret


def invalid_client() -> OAuthError:
    # RFC 6749 §5.2: 401 with a WWW-Authenticate challenge when the client used Basic.
    return OAuthError("invalid_client", "Client authentication failed.", status_code=401)


def credentials(
    authorization: str | None, form_id: str | None, form_secret: str | None
) -> tuple[str, str] | None:
    """The client id and secret from HTTP Basic (preferred) or the form; None if absent."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client() from None
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise invalid_client()
        return unquote(client_id), unquote(secret)
    if form_id or form_secret:
        if not (form_id and form_secret):
            raise invalid_client()
        return form_id, form_secret
    return None


async def authenticate(db: AsyncSession, client_id: str, secret: str) -> OAuthClient:
    client = await db.get(OAuthClient, client_id[:64]) if client_id else None
    expected = client.secret_hash if client is not None else _NO_SUCH_CLIENT
    if not hmac.compare_digest(expected, hash_secret(secret)) or client is None:
        raise invalid_client()
    return client


def is_service_token(claims: Mapping[str, Any]) -> bool:
    """A client_credentials token: it has no session (user tokens always carry ``sid``)."""
    return "sid" not in claims


async def is_revoked(db: AsyncSession, claims: Mapping[str, Any]) -> bool:
    jti = str(claims.get("jti", ""))
    found = await db.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti))
    return found is not None


async def token_client(db: AsyncSession, claims: Mapping[str, Any]) -> OAuthClient | None:
    """The client a verified service token belongs to, while the client exists and the token
    has not been revoked; else None."""
    client = await db.get(OAuthClient, str(claims["sub"]))
    if client is None or await is_revoked(db, claims):
        return None
    return client


async def revoke_service_token(
    db: AsyncSession, requester: OAuthClient | None, claims: Mapping[str, Any]
) -> bool:
    """Revoke a verified service token, if ``requester`` is the client it was issued to.

    RFC 7009 §2.1: the server checks that the token was issued to the client asking. A token
    of another client (or a request without client authentication) is, for that requester, a
    token it cannot revoke; §2.2 answers such requests 200 all the same, so nothing tells the
    requester whether the token exists. Returns whether the token is (now) revoked.
    """
    if requester is None or str(claims.get("client_id")) != requester.id:
        return False
    now = utcnow()
    # Rows are needed only until the token would have expired anyway.
    await db.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now))
    values = {
        "jti": str(claims["jti"]),
        "client_id": requester.id,
        "expires_at": datetime.fromtimestamp(int(claims["exp"]), UTC),
        "revoked_at": now,
    }
    # Revoking twice, even concurrently, is no error: the first row stands.
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    await db.execute(
        dialect.insert(RevokedToken).values(values).on_conflict_do_nothing(index_elements=["jti"])
    )
    await db.commit()
    return True
