"""The MFA grant (an RFC 6749 §4.5 extension grant): the second step of a password sign-in.

``grant_type=urn:authsvc:params:oauth:grant-type:mfa`` with the ``mfa_token`` the password
grant answered and a ``code``: the authenticator's six digits or a recovery code
(``services.mfa.verify``). The challenge the token names must be unused, unexpired, of this
client, and have seen fewer than five codes (each one counted by a conditional UPDATE, right or
wrong); a success spends it (another conditional UPDATE: two parallel successes cannot both
get tokens) and starts the session.

The session's ``amr`` (RFC 8176 §2): ``pwd otp mfa`` after a TOTP code; ``pwd mfa`` after a
recovery code, which is not an RFC 4226/6238 one-time password (``otp``) but still a second
factor, something the user holds; a relying party that wants the authenticator itself can tell.

Then it ends like a password sign-in: the throttle episode of the account ends, the device is
trusted (the one whose token came with the password, checked again, or a new one) and gets a
renewed device token, and ``auth.login.success`` is recorded with the tokens.
"""

from __future__ import annotations

import dataclasses

from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.db.repositories import mfa as repo
from authsvc.errors import Conflict, OAuthError
from authsvc.services.audit import LOGIN_SUCCEEDED, AuditService
from authsvc.services.grants.base import GrantContext, TokenRequest
from authsvc.services.issuer import IssuedTokens
from authsvc.services.mfa import CodeInvalid, CodeRejected, MfaService, MfaThrottled, classify
from authsvc.services.sessions import SessionService
from authsvc.services.throttle import LoginThrottled, ThrottleService, account_key

GRANT_TYPE = "urn:authsvc:params:oauth:grant-type:mfa"
MAX_CODES_PER_CHALLENGE = 5
_MAX_MFA_TOKEN = 128
_AMR = {"otp": ("pwd", "otp", "mfa"), "recovery": ("pwd", "mfa")}


def _token_invalid() -> OAuthError:
    # One answer for forged, unknown, spent, expired, exhausted and foreign tokens.
    return OAuthError(
        "invalid_grant",
        "The mfa_token is invalid, expired or used up; sign in with the password again.",
        code="MFA_TOKEN_INVALID",
    )


class MfaGrant:
    grant_type = GRANT_TYPE

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens:
        presented = request.required("mfa_token", _MAX_MFA_TOKEN)
        code = request.params.get("code", "")
        context.limiter.hit(context.rules.login_ip, request.client_ip)
        try:
            classify(code)  # a malformed code touches nothing, not even the challenge
        except CodeInvalid as exc:
            raise OAuthError("invalid_request", exc.message, code=exc.code) from None
        kit, db = context.mfa, context.db
        now = kit.clock()
        challenge_id = kit.tokens.read(presented)
        if challenge_id is None:
            raise _token_invalid()
        challenge = await repo.attempt_challenge(db, challenge_id, now, MAX_CODES_PER_CHALLENGE)
        client_id = request.optional("client_id") or context.client_id
        if challenge is None or challenge.client_id != client_id:
            raise _token_invalid()
        user = await db.get(User, challenge.user_id)
        if user is None or not user.is_active:
            raise _token_invalid()
        try:
            kind = await MfaService(db, kit, None, request.client_ip).verify(user.id, code)
        except CodeRejected as exc:
            raise OAuthError("invalid_grant", exc.message, code=exc.code) from None
        except MfaThrottled as exc:
            raise LoginThrottled(exc.message, retry_after=exc.retry_after, code=exc.code) from None
        except Conflict:
            raise _token_invalid() from None  # the factor went away since the password step
        if not await repo.spend_challenge(db, challenge_id, now):
            raise _token_invalid()  # a parallel request finished this challenge first

        key = account_key(user.email)
        throttle = ThrottleService(db, context.throttle)
        device = None
        if challenge.device_token is not None:
            device = await throttle.trusted_device(
                context.devices, challenge.device_token, key, now
            )
        device_id = await throttle.signed_in(key, user.id, device, True, now)
        actor = Principal(user_id=user.id, email=user.email)
        AuditService(db, actor, request.client_ip).record(
            LOGIN_SUCCEEDED, "user", str(user.id), None, {"amr": list(_AMR[kind])}
        )
        sessions = SessionService(db, context.session_policy)
        session, refresh_token = await sessions.start(
            user, request.client_ip, request.user_agent, amr=_AMR[kind]
        )
        issued = await context.issuer.for_user(user, session, refresh_token)  # commits
        await context.users.on_after_login(user)
        context.metrics.logins.labels("success").inc()
        return dataclasses.replace(
            issued, device_token=context.devices.issue(device_id, user.id, now)
        )
