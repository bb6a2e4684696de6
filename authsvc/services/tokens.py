"""Introspection (RFC 7662) and revocation (RFC 7009) of the tokens authsvc issued.

An access token is judged by the one caller resolver (``services.callers``), so introspection
and the guarded routes never disagree about a token; a refresh token by its stored hash.

A revocation that ends something is recorded (``TOKEN_REVOKED``) in the same transaction. The
trail's actor columns name users (an administrator, a signed-in user); a client is named where
the admin changes name it, by its id in a column of its own: here ``after.client_id`` (None for
a public app that sent no credentials). The actor stays empty: presenting a token proves
holding it, not who holds it. The target is the session a user's token belongs to, or a
service token's ``jti``; never the token itself.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import OAuthClient, Session
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.services import clients
from authsvc.services.audit import TOKEN_REVOKED, AuditService
from authsvc.services.callers import Anonymous, CallerResolver
from authsvc.services.sessions import hash_refresh_token

INACTIVE: dict[str, Any] = {"active": False}


class TokenService:
    def __init__(
        self, db: AsyncSession, callers: CallerResolver, client_ip: str | None = None
    ) -> None:
        """``client_ip`` goes into the audit events of revocations."""
        self.db = db
        self.callers = callers
        self.client_ip = client_ip

    async def client(
        self, authorization: str | None, client_id: str | None, client_secret: str | None
    ) -> OAuthClient | None:
        """The client the request authenticates as (HTTP Basic or the form, RFC 6749 §2.3.1);
        None when it sends no credentials; ``invalid_client`` for wrong ones."""
        given = clients.credentials(authorization, client_id, client_secret)
        return await clients.authenticate(self.db, *given) if given is not None else None

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 §2.2: the claims of an active token, else only ``active: false``."""
        if not token:
            return INACTIVE
        caller = await self.callers.resolve(self.db, token)
        if not isinstance(caller, Anonymous):
            return {"active": True, "token_type": "access_token", **caller.claims}
        stored = await sessions_repo.by_token_hash(self.db, hash_refresh_token(token))
        if stored is None or stored.used_at is not None:
            return INACTIVE
        session = await self.db.get(Session, stored.session_id)
        if session is None or not sessions_repo.is_live(session):
            return INACTIVE
        return {
            "active": True,
            "token_type": "refresh_token",
            "sub": str(session.user_id),
            "sid": str(session.id),
            "exp": int(session.expires_at.timestamp()),
        }

    async def revoke(self, token: str, requester: OAuthClient | None) -> None:
        """RFC 7009 §2.1: a user's access or refresh token ends its session; a service token
        is revoked only for the client it was issued to. Unknown tokens change nothing."""
        # The signature only: a token that no longer passes (stale, its user deactivated)
        # still names a session worth ending.
        claims = self.callers.claims(token) if token else None
        client_id = requester.id if requester is not None else None
        if claims is not None and clients.is_service_token(claims):
            if await clients.revoke_service_token(self.db, requester, claims):
                after = {"client_id": client_id, "token_type": "access_token"}
                self._record("service_token", str(claims["jti"]), after)
            await self.db.commit()
            return
        session_id: uuid.UUID | None = None
        token_type = "access_token"
        if claims is not None:
            try:
                session_id = uuid.UUID(str(claims["sid"]))
            except ValueError:
                session_id = None
        elif token:
            stored = await sessions_repo.by_token_hash(self.db, hash_refresh_token(token))
            session_id = stored.session_id if stored is not None else None
            token_type = "refresh_token"
        if session_id is None:
            return
        if await sessions_repo.revoke(self.db, [session_id], "revoked"):
            session = await self.db.get(Session, session_id)
            user_id = str(session.user_id) if session is not None else None
            after = {"client_id": client_id, "user_id": user_id, "token_type": token_type}
            self._record("session", str(session_id), after)
        await self.db.commit()

    def _record(self, target_type: str, target_id: str, after: dict[str, Any]) -> None:
        AuditService(self.db, None, self.client_ip).record(
            TOKEN_REVOKED, target_type, target_id, None, after
        )
