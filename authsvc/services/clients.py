"""Service clients: registration, and client authentication (RFC 6749 §2.3.1)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from urllib.parse import unquote

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import OAuthClient
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
