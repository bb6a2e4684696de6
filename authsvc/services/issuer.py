"""The one token issuer: every grant's access token is assembled and signed here.

A grant prepares its writes (a new session and refresh token, a rotation) in the request's
database transaction and hands them over uncommitted; the issuer signs the access token and
only then commits. Signing fails (a key store hiccup, a bug): nothing is committed, so no
session exists that nobody received, and a presented refresh token is not spent.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.config import DEFAULT_MFA_REQUIRED_ROLES
from authsvc.db.models import OAuthClient, Session, User
from authsvc.security.tokens import AccessTokenCodec, IssuedToken
from authsvc.services.claims import grants_for


@dataclass(frozen=True)
class IssuedTokens:
    """What the token endpoint answers (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    refresh_token: str | None = None
    # The password grant's extension parameter (RFC 6749 §5.1): proof of a trusted device.
    device_token: str | None = None


class TokenIssuer:
    """Bound to one request's database session: its commit is the grant's commit."""

    def __init__(
        self,
        db: AsyncSession,
        codec: AccessTokenCodec,
        mfa_required_roles: Collection[str] = DEFAULT_MFA_REQUIRED_ROLES,
    ) -> None:
        self.db = db
        self.codec = codec
        # AUTHSVC_MFA_REQUIRED_ROLES (services.claims); the default is the setting's, so an
        # issuer built without it errs on the strict side.
        self.mfa_required_roles = frozenset(mfa_required_roles)

    async def for_user(self, user: User, session: Session, refresh_token: str) -> IssuedTokens:
        """A user's token: roles and permissions as of now (one query), the ``ver`` they hold
        for, and the session (``sid``) the refresh token continues. Roles that need a second
        factor count only when the session's ``amr`` has ``mfa`` (``services.claims``)."""
        amr = session.amr.split()
        grants = await grants_for(
            self.db, user, mfa="mfa" in amr, mfa_roles=self.mfa_required_roles
        )
        claims: dict[str, Any] = {
            "roles": grants.roles,
            "permissions": grants.permissions,
            "ver": grants.version,
            "sid": str(session.id),
            # RFC 8176 / OpenID Connect Core §2: how and when the user authenticated, the same
            # for every token of the session (a refresh does not re-authenticate).
            "amr": amr,
            "auth_time": int(session.auth_time.timestamp()),
        }
        withheld = grants.withheld_claim()
        if withheld is not None:  # what a second factor would add: the guards say so (403)
            claims["mfa_withheld"] = withheld
        issued = await self._sign_then_commit(str(user.id), claims)
        return IssuedTokens(issued.token, issued.expires_in, refresh_token)

    async def for_client(self, client: OAuthClient) -> IssuedTokens:
        """A service client's token: its own permissions, no roles, no session, ``ver`` 0
        (a client's permissions are checked live where it matters: introspection)."""
        claims = {"roles": [], "permissions": client.permissions, "ver": 0}
        issued = await self._sign_then_commit(client.id, claims, client_id=client.id)
        # RFC 6749 §4.4.3: no refresh token for the client credentials grant.
        return IssuedTokens(issued.token, issued.expires_in)

    async def _sign_then_commit(
        self, subject: str, claims: Mapping[str, Any], client_id: str | None = None
    ) -> IssuedToken:
        try:
            issued = self.codec.issue(subject, extra=claims, client_id=client_id)
        except Exception:
            await self.db.rollback()  # the grant's writes go with the token it never got
            raise
        await self.db.commit()
        return issued
