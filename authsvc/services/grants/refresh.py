"""The refresh token grant (RFC 6749 §6), rotating (RFC 9700 §4.14): see ``services.sessions``."""

from __future__ import annotations

from authsvc.services.grants.base import GrantContext, TokenRequest
from authsvc.services.issuer import IssuedTokens
from authsvc.services.sessions import SessionService

_MAX_REFRESH = 256


class RefreshTokenGrant:
    grant_type = "refresh_token"

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens:
        presented = request.required("refresh_token", _MAX_REFRESH)
        context.limiter.hit(context.rules.login_ip, request.client_ip)
        # Spent in this transaction; the issuer commits it only with the new access token.
        sessions = SessionService(context.db, context.session_policy, request.client_ip)
        refreshed = await sessions.rotate(presented)
        return await context.issuer.for_user(
            refreshed.user, refreshed.session, refreshed.refresh_token
        )
