"""Who is calling: the one way in.

Every route, guard, the rate limiter, introspection and the decision API ask this resolver,
once per request, under one rule set. A bearer access token becomes

- a ``UserCaller``: the signature, ``typ``, ``iss``, ``aud``, ``exp`` and ``sub`` hold
  (``AccessTokenCodec.verify``), its session (``sid``) is live, the account is active, and the
  token's ``ver`` equals the user's ``authz_version`` (roles unchanged since it was issued);
- a ``ClientCaller`` (a client_credentials token, which has no ``sid``): the client still
  exists and has not revoked the token;
- else ``Anonymous``, carrying why the token was refused: 401 ``TOKEN_INVALID`` (malformed,
  forged, expired, unknown subject, deactivated account), ``TOKEN_REVOKED`` (session ended,
  service token revoked) or ``TOKEN_STALE`` (roles or permissions changed).

The user row and the session row are read together in one query, so freshness and revocation
cost no extra round trip, and every worker reads the same rows: a logout is refused by all
workers at once. No FastAPI here: ``api.deps.get_caller`` runs this once per request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.authz.permissions import grants
from authsvc.db.models import OAuthClient, User
from authsvc.db.repositories.service_tokens import client_and_revocation
from authsvc.db.repositories.sessions import is_live, user_with_session
from authsvc.errors import Unauthorized
from authsvc.security.tokens import AccessTokenCodec, InvalidTokenError

log = logging.getLogger("authsvc.callers")


def token_invalid() -> Unauthorized:
    # One answer for every kind of bad token: which check failed is for the log, not the caller.
    return Unauthorized("The access token is invalid or expired.", code="TOKEN_INVALID")


def token_revoked() -> Unauthorized:
    return Unauthorized(
        "The access token has been revoked: its session ended (signed out) or it was revoked.",
        code="TOKEN_REVOKED",
    )


def token_stale() -> Unauthorized:
    return Unauthorized(
        "Your roles or permissions changed since this token was issued; get a new token.",
        code="TOKEN_STALE",
    )


def not_authenticated() -> Unauthorized:
    return Unauthorized(
        "Authentication required: send a bearer access token.", code="NOT_AUTHENTICATED"
    )


@dataclass(frozen=True)
class UserCaller:
    """A signed-in user; ``user`` is the row the resolver read (fresh for this request)."""

    principal: Principal
    user: User = field(compare=False)
    claims: Mapping[str, Any] = field(compare=False)

    @property
    def rate_key(self) -> str:
        return str(self.principal.user_id)


@dataclass(frozen=True)
class ClientCaller:
    """A service client, by its client_credentials token."""

    client_id: str
    permissions: frozenset[str]
    claims: Mapping[str, Any] = field(compare=False)

    @property
    def rate_key(self) -> str:
        return self.client_id

    def has(self, permission: str) -> bool:
        return any(grants(held, permission) for held in self.permissions)


@dataclass(frozen=True)
class Anonymous:
    """No credential, or a refused one (``refusal`` says why). Holds no permissions."""

    refusal: Unauthorized | None = None

    def reason(self) -> Unauthorized:
        """The error a route that needs a caller answers."""
        return self.refusal if self.refusal is not None else not_authenticated()


Caller = UserCaller | ClientCaller | Anonymous


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _strings(value: object) -> frozenset[str]:
    return frozenset(str(v) for v in value) if isinstance(value, list) else frozenset()


def _principal(user: User, claims: Mapping[str, Any], session_id: uuid.UUID) -> Principal:
    # What a second factor would add (services.claims): only to say why a refusal is one.
    withheld = claims.get("mfa_withheld")
    if not isinstance(withheld, dict):
        withheld = {}
    return Principal(
        user_id=user.id,
        email=user.email,
        is_superuser=user.is_superuser,
        # Roles and permissions from the token: trusted because its ``ver`` is current.
        roles=_strings(claims.get("roles")),
        permissions=_strings(claims.get("permissions")),
        session_id=session_id,
        is_verified=user.is_verified,
        attributes=user.attributes or {},
        mfa="mfa" in _strings(claims.get("amr")),
        auth_time=_auth_time(claims.get("auth_time")),
        withheld_roles=_strings(withheld.get("roles")),
        withheld_permissions=_strings(withheld.get("permissions")),
    )


def _auth_time(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class CallerResolver:
    def __init__(self, codec: AccessTokenCodec) -> None:
        self.codec = codec

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a well-signed, unexpired access token of ours, else None. Checks
        nothing stored: for revocation, which must also take tokens that no longer pass."""
        try:
            return self.codec.verify(token)
        except InvalidTokenError as exc:
            log.debug("access token refused: %s", exc)
            return None

    async def resolve(self, db: AsyncSession, token: str | None) -> Caller:
        """Never raises for a bad token: the refusal travels in ``Anonymous``."""
        if not token:
            return Anonymous()
        try:
            return await self.require(db, token)
        except Unauthorized as refusal:
            return Anonymous(refusal)

    async def require(self, db: AsyncSession, token: str) -> UserCaller | ClientCaller:
        """The caller the token stands for, or the 401 that refuses it."""
        claims = self.claims(token)
        if claims is None:
            raise token_invalid()
        if "sid" not in claims:  # RFC 6749 §4.4 tokens have no login session
            return await self._client(db, claims)
        return await self._user(db, claims)

    async def _user(self, db: AsyncSession, claims: dict[str, Any]) -> UserCaller:
        user_id, session_id = _uuid(claims["sub"]), _uuid(claims["sid"])
        if user_id is None or session_id is None:
            raise token_invalid()
        user, login = await user_with_session(db, user_id, session_id)
        if user is None or not user.is_active:
            raise token_invalid()
        if not is_live(login):
            raise token_revoked()
        if claims.get("ver") != user.authz_version:
            raise token_stale()
        return UserCaller(_principal(user, claims, session_id), user, claims)

    async def _client(self, db: AsyncSession, claims: dict[str, Any]) -> ClientCaller:
        client, revoked = await client_and_revocation(
            db, str(claims["sub"]), str(claims.get("jti", ""))
        )
        if client is None:
            raise token_invalid()
        if revoked:
            raise token_revoked()
        return _client_caller(client, claims)


def _client_caller(client: OAuthClient, claims: Mapping[str, Any]) -> ClientCaller:
    return ClientCaller(client.id, frozenset(client.permissions or ()), claims)
