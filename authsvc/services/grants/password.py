"""The resource owner password credentials grant (RFC 6749 §4.3): email and password.

Every attempt passes the per-IP limit, then the sign-in throttle (``services.throttle``):
per account identifier for an untrusted device, per device for one presenting a valid device
token. An attempt held back is not evaluated at all. Each outcome is in the security trail,
committed before the error is raised.

An account with a confirmed second factor gets no tokens here: the right password answers 400
``mfa_required`` with an ``mfa_token`` naming a new challenge (``services.grants.mfa`` takes it
from there). Such a sign-in is not a success yet: it records no ``auth.login.success``, leaves
the throttle as the admission left it and trusts no device. Only the second step, with the
factor checked, ends the throttle episode and hands out a device token, so that knowing the
password alone neither wipes the record of an attack on it nor earns a device the trust that
exempts it from the account's throttle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

from fastapi.security import OAuth2PasswordRequestForm

from authsvc.authz.engine import Principal
from authsvc.db.models import User, utcnow
from authsvc.db.repositories import mfa as mfa_repo
from authsvc.db.repositories.throttles import DeviceState
from authsvc.errors import OAuthError
from authsvc.notify.base import TokenMessage
from authsvc.services.audit import (
    LOGIN_FAILED,
    LOGIN_SUCCEEDED,
    LOGIN_THROTTLED,
    AuditService,
)
from authsvc.services.grants.base import GrantContext, TokenRequest
from authsvc.services.issuer import IssuedTokens
from authsvc.services.sessions import SessionService
from authsvc.services.throttle import ThrottleService, account_key

_MAX_USERNAME = 320
_MAX_PASSWORD = 4096
_AUDIT_KEY = 128  # audit_events.target_id


class PasswordGrant:
    grant_type = "password"

    def __init__(self) -> None:
        # The throttle's time (tests drive it instead of sleeping).
        self.clock: Callable[[], datetime] = utcnow

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens:
        email = request.required("username", _MAX_USERNAME)
        secret = request.required("password", _MAX_PASSWORD)
        # Counted before anything else: the per-IP limit also shields the database and hasher.
        context.limiter.hit(context.rules.login_ip, request.client_ip)
        now = self.clock()
        # The key the account lookup matches on (UserDatabase.get_by_email): every spelling
        # that reaches an account counts against that account.
        key = account_key(email)
        throttle = ThrottleService(context.db, context.throttle)
        device = await throttle.trusted_device(
            context.devices, request.optional("device_token"), key, now
        )
        had_row = False
        if device is None:
            # Only for untrusted attempts: the owner's known device is never refused because
            # of someone else's guesses (that is the point of device tokens).
            context.limiter.hit(context.rules.login_username, key)
            held, had_row = await throttle.admit_account(key, now)
        else:
            held = await throttle.admit_device(device, now)
        trail = _Trail(context, request, email)
        if held is not None:
            await trail.failed("throttled")
            raise held.error()

        form = OAuth2PasswordRequestForm(
            username=email, password=secret, scope=request.params.get("scope", "")
        )
        user = await context.users.authenticate(form)
        if user is None or not user.is_active:
            await self._failed(context, throttle, trail, key, device, user, now)
        if context.require_verified_email and not user.is_verified:
            # Only after the right password: a wrong one got the answer above.
            await trail.failed("email_not_verified", user)
            raise OAuthError(
                "invalid_grant",
                "Verify your email address first: use the link we sent you, or ask for a new "
                "one (POST /auth/request-verify-token).",
                code="EMAIL_NOT_VERIFIED",
            )
        if await mfa_repo.confirmed(context.db, user.id):
            await _challenge(context, request, user, device)
        device_id = await throttle.signed_in(key, user.id, device, had_row, now)
        trail.succeeded(user)
        sessions = SessionService(context.db, context.session_policy)
        session, refresh_token = await sessions.start(user, request.client_ip, request.user_agent)
        issued = await context.issuer.for_user(user, session, refresh_token)  # commits
        # fastapi-users' hook (a no-op today); a service has no HTTP request to give it.
        await context.users.on_after_login(user)
        context.metrics.logins.labels("success").inc()
        # RFC 6749 §5.1 allows extension parameters: the device's token, renewed.
        return dataclasses.replace(
            issued, device_token=context.devices.issue(device_id, user.id, now)
        )

    async def _failed(
        self,
        context: GrantContext,
        throttle: ThrottleService,
        trail: _Trail,
        key: str,
        device: DeviceState | None,
        user: User | None,
        now: datetime,
    ) -> NoReturn:
        """Count the failure where the attempt was judged, record it, tell the owner when the
        account starts being throttled, and raise the one answer for every such failure."""
        context.metrics.logins.labels("failure").inc()
        reason = "bad_credentials" if user is None else "inactive"
        owner = user or await context.users.user_db.get_by_email(trail.email)
        started = False
        if device is None:
            started = (await throttle.account_failed(key, now)).started_throttling
        else:
            await throttle.device_failed(device, now)
        await trail.failed(reason, owner, commit=not started)
        if started:
            trail.record(LOGIN_THROTTLED, owner, None)
            await context.db.commit()
            if owner is not None:
                # After the commit: the mail never tells of a throttle that did not happen.
                await context.users.notifier.send(
                    TokenMessage(owner.email, "login-throttled", None, None)
                )
        # One answer for unknown email, wrong password and inactive account.
        raise OAuthError(
            "invalid_grant", "Incorrect email or password.", code="LOGIN_BAD_CREDENTIALS"
        )


async def _challenge(
    context: GrantContext, request: TokenRequest, user: User, device: DeviceState | None
) -> NoReturn:
    """Answer ``mfa_required`` with a new challenge for this account and client, carrying the
    device token if it was trusted here (the second step checks it again)."""
    now = context.mfa.clock()
    # Expired challenges are of no use; clearing them here keeps the table to the live ones.
    await mfa_repo.purge_challenges(context.db, now)
    challenge = await mfa_repo.add_challenge(
        context.db,
        user.id,
        context.client_id,
        request.optional("device_token") if device is not None else None,
        now,
        now + context.mfa.token_lifetime,
    )
    await context.db.commit()
    # RFC 6749 §5.2 allows error codes beyond its own; the extension member carries the token.
    raise OAuthError(
        "mfa_required",
        "The password is right; this account also needs a second factor. Send the mfa_token "
        "with a code from the authenticator app (or a recovery code) as "
        "grant_type=urn:authsvc:params:oauth:grant-type:mfa.",
        code="MFA_REQUIRED",
        extra={"mfa_token": context.mfa.tokens.issue(challenge)},
    )


@dataclasses.dataclass
class _Trail:
    """The security trail of one attempt: the account when there is one, else the submitted
    identifier (truncated), never the password."""

    context: GrantContext
    request: TokenRequest
    email: str

    def record(self, action: str, user: User | None, after: dict[str, object] | None) -> None:
        if user is not None:
            target_type, target_id = "user", str(user.id)
        else:
            target_type, target_id = "account", account_key(self.email)[:_AUDIT_KEY]
        # The actor of a success is the account that signed in; a failure has none.
        actor = None
        if action == LOGIN_SUCCEEDED and user is not None:
            actor = Principal(user_id=user.id, email=user.email)
        AuditService(self.context.db, actor, self.request.client_ip).record(
            action, target_type, target_id, None, after
        )

    async def failed(self, reason: str, user: User | None = None, *, commit: bool = True) -> None:
        if user is None and reason == "throttled":
            user = await self.context.users.user_db.get_by_email(self.email)
        self.record(LOGIN_FAILED, user, {"reason": reason})
        if commit:
            # Before the error is raised: a refused sign-in leaves its trace.
            await self.context.db.commit()

    def succeeded(self, user: User) -> None:
        # Committed with the session by the issuer.
        self.record(LOGIN_SUCCEEDED, user, None)
