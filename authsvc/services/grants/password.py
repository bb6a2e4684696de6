"""The resource owner password credentials grant (RFC 6749 §4.3): email and password."""

from __future__ import annotations

from fastapi.security import OAuth2PasswordRequestForm

from authsvc.errors import OAuthError
from authsvc.security.identifiers import normalize_email
from authsvc.services.grants.base import GrantContext, TokenRequest
from authsvc.services.issuer import IssuedTokens
from authsvc.services.sessions import SessionService

_MAX_USERNAME = 320
_MAX_PASSWORD = 4096


class PasswordGrant:
    grant_type = "password"

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens:
        email = request.required("username", _MAX_USERNAME)
        secret = request.required("password", _MAX_PASSWORD)
        # Counted before the password is checked: the limits also shield the hasher.
        context.limiter.hit(context.rules.login_ip, request.client_ip)
        # The key the account lookup matches on (UserDatabase.get_by_email): every spelling
        # that reaches an account counts against that account's limit.
        context.limiter.hit(context.rules.login_username, normalize_email(email))

        form = OAuth2PasswordRequestForm(
            username=email, password=secret, scope=request.params.get("scope", "")
        )
        user = await context.users.authenticate(form)
        if user is None or not user.is_active:
            context.metrics.logins.labels("failure").inc()
            # One answer for unknown email, wrong password and inactive account.
            raise OAuthError(
                "invalid_grant", "Incorrect email or password.", code="LOGIN_BAD_CREDENTIALS"
            )
        sessions = SessionService(context.db, context.session_policy)
        session, refresh_token = await sessions.start(user, request.client_ip, request.user_agent)
        issued = await context.issuer.for_user(user, session, refresh_token)
        # fastapi-users' hook (a no-op today); a service has no HTTP request to give it.
        await context.users.on_after_login(user)
        context.metrics.logins.labels("success").inc()
        return issued
