"""Queries behind an administrator's view and reset of a user's second factor. No commits, no
HTTP.

The reset deletes with ``RETURNING`` (PostgreSQL, SQLite >= 3.35): what it reports is what it
removed, not what a read a moment earlier saw, so a confirmation or a recovery code spent in
between cannot make the audit trail describe a state that was not the one deleted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import MfaChallenge, RecoveryCode, TotpFactor

_f = TotpFactor.__table__.c
_r = RecoveryCode.__table__.c
_c = MfaChallenge.__table__.c


@dataclass(frozen=True)
class FactorState:
    """``present``: a factor row exists (pending while ``confirmed_at`` is None)."""

    present: bool
    confirmed_at: datetime | None
    recovery_codes_remaining: int


async def state(db: AsyncSession, user_id: uuid.UUID) -> FactorState:
    """The factor and the count of unused recovery codes, in one statement."""
    created = select(_f.created_at).where(_f.user_id == user_id).scalar_subquery()
    confirmed = select(_f.confirmed_at).where(_f.user_id == user_id).scalar_subquery()
    remaining = (
        select(func.count())
        .select_from(RecoveryCode)
        .where(_r.user_id == user_id, _r.used_at.is_(None))
        .scalar_subquery()
    )
    row = (await db.execute(select(created, confirmed, remaining))).one()
    return FactorState(row[0] is not None, row[1], int(row[2] or 0))


async def delete_factor(db: AsyncSession, user_id: uuid.UUID) -> tuple[bool, datetime | None]:
    """Delete the user's TOTP factor: (whether there was one, its ``confirmed_at``)."""
    result = await db.execute(
        delete(TotpFactor)
        .where(_f.user_id == user_id)
        .returning(_f.confirmed_at)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    return (False, None) if row is None else (True, row[0])


async def delete_recovery_codes(db: AsyncSession, user_id: uuid.UUID) -> tuple[int, int]:
    """Delete every recovery code of the user, spent or not: (deleted, of which unused)."""
    result = await db.execute(
        delete(RecoveryCode)
        .where(_r.user_id == user_id)
        .returning(_r.used_at)
        .execution_options(synchronize_session=False)
    )
    used_at = list(result.scalars())
    return len(used_at), sum(1 for value in used_at if value is None)


async def delete_open_challenges(db: AsyncSession, user_id: uuid.UUID) -> int:
    """Delete the user's unused MFA challenges (their ``mfa_token`` then names nothing); the
    spent ones open nothing and stay."""
    result = await db.execute(
        delete(MfaChallenge)
        .where(_c.user_id == user_id, _c.used_at.is_(None))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
