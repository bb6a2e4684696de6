"""The audit trail: record what the admin API changes, and read it back.

An event is added to the caller's transaction, never committed here: it commits with the
change it describes, or is rolled back with it, so the trail never shows a change that did
not happen nor misses one that did. At the commit it joins the hash chain, and once committed
it is written as a log line too (services/audit_chain.py; the same for events added without
this class).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.db.models import AuditEvent
from authsvc.db.repositories.audit import AuditFilter, events_query
from authsvc.db.repositories.roles import page
from authsvc.observability import request_id_var, user_agent_var
from authsvc.services import audit_chain

audit_chain.install()  # idempotent; every session that adds events chains them

__all__ = ["AuditFilter", "AuditService"]

# The security trail's actions (ASVS V16.3), one name each, besides the admin changes
# ("role.*", "user.update", "client.*", "key.rotate", ...) recorded where they happen.
LOGIN_SUCCEEDED = "auth.login.success"
LOGIN_FAILED = "auth.login.failure"  # after: {"reason": ...}, never the password
LOGIN_THROTTLED = "auth.login.throttled"  # an account identifier starts being throttled
THROTTLE_CLEARED = "auth.login.unlock"  # by an administrator
LOGOUT = "auth.logout"
REFRESH_REUSED = "auth.refresh.reuse"  # a spent refresh token came back: the session ends
TOKEN_REVOKED = "auth.token.revoke"  # RFC 7009 revocation
SESSION_REVOKED = "user.sessions.revoke"
USER_REGISTERED = "user.register"
REGISTER_ATTEMPTED = "user.register.taken"  # someone tried to register an address in use
PASSWORD_CHANGED = "user.password.change"
PASSWORD_RESET = "user.password.reset"
EMAIL_CHANGE_REQUESTED = "user.email.change_request"  # pending until the new address confirms
EMAIL_CHANGED = "user.email.change"
EMAIL_REVERTED = "user.email.revert"
EMAIL_VERIFIED = "user.email.verify"
POLICY_RELOADED = "policy.reload"
# Second factors (issue 14): never a secret, a code or a recovery code in an event.
MFA_ENROLL_STARTED = "auth.mfa.enroll"  # a pending TOTP factor, waiting for its first code
MFA_ENABLED = "auth.mfa.enable"
MFA_REMOVED = "auth.mfa.remove"
MFA_FAILED = "auth.mfa.failure"  # after: {"reason", "kind", "failures"}
RECOVERY_CODE_USED = "auth.mfa.recovery_code"
RECOVERY_CODES_REGENERATED = "auth.mfa.recovery_codes"
MFA_RESET = "auth.mfa.reset"  # an administrator removed a user's second factor


class AuditService:
    def __init__(
        self, db: AsyncSession, actor: Principal | None = None, client_ip: str | None = None
    ) -> None:
        """``actor`` and ``client_ip`` are who changes something (readers need neither)."""
        self.db = db
        self.actor = actor
        self.client_ip = client_ip

    def record(
        self,
        action: str,
        target_type: str,
        target_id: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> AuditEvent:
        """Add the event to the open transaction; the caller's commit stores it."""
        event = AuditEvent(
            actor_id=self.actor.user_id if self.actor else None,
            actor_email=self.actor.email if self.actor else None,
            action=action,
            target_type=target_type,
            target_id=target_id,
            before=before,
            after=after,
            client_ip=self.client_ip,
            user_agent=user_agent_var.get(),
            request_id=request_id_var.get(),
        )
        self.db.add(event)
        return event

    async def events(
        self, filters: AuditFilter, *, limit: int, offset: int
    ) -> tuple[Sequence[AuditEvent], int]:
        """One page of the matching events, newest first, and how many match in all."""
        return await page(self.db, events_query(filters), limit=limit, offset=offset)
