"""An administrator sees and resets a user's second factor (issue 14).

The reset is for an owner who lost their authenticator and their recovery codes, and for an
account suspected taken over (someone enrolled a factor of their own). It removes the TOTP
factor (pending or confirmed), every recovery code and every open MFA challenge (a password
sign-in waiting for its code then has nothing to finish with), in one transaction with its
audit event; the owner is told by mail once it is committed.

Sessions are kept unless asked (``end_sessions``): after a lost phone the owner is usually
still signed in somewhere, and that session is how they enrol a new factor; signing them out
would only add a password sign-in. When the account may be in someone else's hands, the
administrator asks for ``end_sessions`` and every session ends in the same transaction, so
that no refresh token outlives the factor the taker may have enrolled.

Removing a factor weakens an account (its password alone then signs in), so the no-escalation
guardrail applies as to any other change: nobody resets the factor of an account holding a
power they do not hold themselves (a superuser's, for one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.db.repositories import mfa_admin as repo
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.errors import NotFound
from authsvc.notify.base import Notifier, TokenMessage
from authsvc.services.audit import MFA_RESET, AuditService
from authsvc.services.guardrails import Guardrails

__all__ = ["MfaStatus", "ResetBy", "TotpStatus", "reset", "view"]

TotpStatus = Literal["none", "pending", "enabled"]


@dataclass(frozen=True)
class MfaStatus:
    totp: TotpStatus
    enabled_at: datetime | None
    recovery_codes_remaining: int

    @classmethod
    def of(cls, present: bool, confirmed_at: datetime | None, remaining: int) -> MfaStatus:
        if not present:
            return cls("none", None, remaining)
        if confirmed_at is None:
            return cls("pending", None, remaining)
        return cls("enabled", confirmed_at, remaining)

    def snapshot(self) -> dict[str, object]:
        return {
            "totp": self.totp,
            "enabled_at": self.enabled_at.isoformat() if self.enabled_at else None,
            "recovery_codes_remaining": self.recovery_codes_remaining,
        }


async def view(db: AsyncSession, user: User) -> MfaStatus:
    found = await repo.state(db, user.id)
    return MfaStatus.of(found.present, found.confirmed_at, found.recovery_codes_remaining)


def _not_enrolled() -> NotFound:
    return NotFound(
        "This user has no second factor (no TOTP factor, no recovery codes): nothing to reset.",
        code="MFA_NOT_ENROLLED",
    )


@dataclass(frozen=True)
class ResetBy:
    """Who resets, from where, under which loaded policies (their named roles count as
    powers for the guardrail)."""

    actor: Principal
    client_ip: str | None
    named_roles: frozenset[str] | None


async def reset(
    db: AsyncSession,
    by: ResetBy,
    user: User,
    notifier: Notifier,
    *,
    end_sessions: bool = False,
) -> MfaStatus:
    """Remove the user's second factor; the status it had. 403 ``PERMISSION_DENIED`` for an
    account more powerful than the actor, 404 ``MFA_NOT_ENROLLED`` when there is nothing to
    remove (then nothing is recorded and nobody is mailed)."""
    await Guardrails(db, by.actor, by.named_roles).guard_target(user)
    # Read now: the commit (or the rollback) expires the loaded user.
    user_id, email = user.id, user.email
    present, confirmed_at = await repo.delete_factor(db, user_id)
    codes, unused = await repo.delete_recovery_codes(db, user_id)
    if not present and not codes:
        await db.rollback()
        raise _not_enrolled()
    challenges = await repo.delete_open_challenges(db, user_id)
    ended = await sessions_repo.revoke_all(db, user_id, "mfa-reset") if end_sessions else 0
    before = MfaStatus.of(present, confirmed_at, unused)
    after = {
        "totp": "none",
        "recovery_codes_remaining": 0,
        "challenges_ended": challenges,
        "sessions_ended": ended,
    }
    AuditService(db, by.actor, by.client_ip).record(
        MFA_RESET, "user", str(user_id), before.snapshot(), after
    )
    await db.commit()
    # After the commit: the mail never tells of a reset that did not happen.
    await notifier.send(TokenMessage(email, "mfa-reset", None, None))
    return before
