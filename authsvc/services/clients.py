"""Service clients: registration, listing and deletion by administrators (``ClientService``),
client authentication (RFC 6749 §2.3.1), and the revocation of their access tokens (RFC 7009)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.authz.power import Power
from authsvc.db.models import OAuthClient, utcnow
from authsvc.db.repositories import clients as repo
from authsvc.errors import NotFound, OAuthError
from authsvc.services.roles import RoleService

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
    client = await repo.get(db, client_id[:64]) if client_id else None
    expected = client.secret_hash if client is not None else _NO_SUCH_CLIENT
    if not hmac.compare_digest(expected, hash_secret(secret)) or client is None:
        raise invalid_client()
    return client


def is_service_token(claims: Mapping[str, Any]) -> bool:
    """A client_credentials token: it has no session (user tokens always carry ``sid``)."""
    return "sid" not in claims


async def is_revoked(db: AsyncSession, claims: Mapping[str, Any]) -> bool:
    return await repo.is_revoked(db, str(claims.get("jti", "")))


async def token_client(db: AsyncSession, claims: Mapping[str, Any]) -> OAuthClient | None:
    """The client a verified service token belongs to, while the client exists and the token
    has not been revoked; else None."""
    client = await repo.get(db, str(claims["sub"]))
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
    requester whether the token exists. Returns whether this call revoked it (False too when
    it already was); uncommitted: the caller commits it with its audit event.
    """
    if requester is None or str(claims.get("client_id")) != requester.id:
        return False
    return await repo.add_revoked(
        db,
        jti=str(claims["jti"]),
        client_id=requester.id,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        now=utcnow(),
    )


class ClientService:
    """What administrators do with clients: every change is checked against the no-escalation
    rule (``authz.power``) and committed once, with its audit event."""

    def __init__(self, db: AsyncSession, actor: Principal, client_ip: str | None) -> None:
        self.db = db
        self.actor = actor
        self.roles = RoleService(db, actor, client_ip)

    async def register(self, name: str, permissions: list[str]) -> tuple[OAuthClient, str]:
        """The new client and its secret (shown once). 404 for an unknown permission; 403
        unless the actor holds every permission given."""
        for permission in permissions:
            await self.roles.permission(permission)  # 404 for unknown, creates known wildcards
        await self.roles.no_escalation(Power(frozenset(permissions)), "give a client these")
        client, secret = new_client(name, permissions)
        client.created_by = self.actor.user_id
        self.db.add(client)
        after = {"name": client.name, "permissions": client.permissions}
        self.roles.audit.record("client.create", "client", client.id, None, after)
        await self.db.commit()
        return client, secret

    async def all(self) -> Sequence[OAuthClient]:
        return await repo.all_clients(self.db)

    async def delete(self, client_id: str) -> None:
        """Its tokens stop passing at once (their client is gone). 404 ``CLIENT_NOT_FOUND``;
        403 unless the actor holds the client's permissions."""
        client = await repo.get(self.db, client_id)
        if client is None:
            raise NotFound("No such client.", code="CLIENT_NOT_FOUND")
        # Taking its permissions away needs what giving them did (authz.power).
        await self.roles.no_escalation(Power(frozenset(client.permissions)), "delete this client")
        self.roles.audit.record("client.delete", "client", client.id, {"name": client.name}, None)
        await self.db.delete(client)
        await self.db.commit()
