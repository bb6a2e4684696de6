"""Queries on second factors: TOTP factors, recovery codes, sign-in challenges. No commits.

Every change that decides whether a code passes is one conditional statement whose rowcount
decides, so parallel requests (other workers, other hosts) cannot both pass: a TOTP step is
accepted only if it is later than the last one (``last_step < :step``), a recovery code only
while unused (``used_at IS NULL``), a challenge only once and a bounded number of times.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import MfaChallenge, RecoveryCode, TotpFactor

_f = TotpFactor.__table__.c
_r = RecoveryCode.__table__.c
_c = MfaChallenge.__table__.c


@dataclass(frozen=True)
class FactorState:
    secret: str  # sealed
    confirmed_at: datetime | None
    last_step: int | None
    failures: int
    blocked_until: datetime | None


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# --- the TOTP factor -------------------------------------------------------------------------


async def factor(db: AsyncSession, user_id: uuid.UUID) -> FactorState | None:
    query = select(_f.secret, _f.confirmed_at, _f.last_step, _f.failures, _f.blocked_until)
    row = (await db.execute(query.where(_f.user_id == user_id))).first()
    return None if row is None else FactorState(*row)


async def confirmed(db: AsyncSession, user_id: uuid.UUID) -> bool:
    """Whether the account has a confirmed factor (a pending one asks for nothing)."""
    query = select(_f.user_id).where(_f.user_id == user_id, _f.confirmed_at.is_not(None))
    return (await db.execute(query)).first() is not None


async def start(db: AsyncSession, user_id: uuid.UUID, sealed: str, now: datetime) -> bool:
    """A pending factor with this secret, replacing a pending one: one upsert that leaves a
    confirmed factor alone. False if there is one."""
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(TotpFactor)
        .values(user_id=user_id, secret=sealed, created_at=now, failures=0)
        .on_conflict_do_update(
            index_elements=[_f.user_id],
            set_={"secret": sealed, "created_at": now, "last_step": None},
            where=_f.confirmed_at.is_(None),
        )
    )
    return _rowcount(await db.execute(statement)) == 1


async def confirm(db: AsyncSession, user_id: uuid.UUID, step: int, now: datetime) -> bool:
    """Pending to confirmed, with the step of the first code spent; False if not pending."""
    result = await db.execute(
        update(TotpFactor)
        .where(_f.user_id == user_id, _f.confirmed_at.is_(None))
        .values(confirmed_at=now, last_step=step, failures=0, blocked_until=None)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def accept_step(db: AsyncSession, user_id: uuid.UUID, step: int) -> bool:
    """Spend a code's time step: only if later than the last one spent (RFC 6238 §5.2), which
    also ends a run of failures. False: a replay, or a parallel use of the same code won."""
    result = await db.execute(
        update(TotpFactor)
        .where(
            _f.user_id == user_id,
            _f.confirmed_at.is_not(None),
            or_(_f.last_step.is_(None), _f.last_step < step),
        )
        .values(last_step=step, failures=0, blocked_until=None)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def add_failure(db: AsyncSession, user_id: uuid.UUID) -> int:
    result = await db.execute(
        update(TotpFactor)
        .where(_f.user_id == user_id)
        .values(failures=_f.failures + 1)
        .returning(_f.failures)
        .execution_options(synchronize_session=False)
    )
    return int(result.scalar_one_or_none() or 0)


async def hold(db: AsyncSession, user_id: uuid.UUID, until: datetime) -> None:
    """No code before ``until``; never moves a later hold back."""
    await db.execute(
        update(TotpFactor)
        .where(_f.user_id == user_id, or_(_f.blocked_until.is_(None), _f.blocked_until < until))
        .values(blocked_until=until)
        .execution_options(synchronize_session=False)
    )


async def claim(db: AsyncSession, user_id: uuid.UUID, now: datetime, until: datetime) -> bool:
    """Take the one attempt due now, once the hold has passed: True for one caller only."""
    result = await db.execute(
        update(TotpFactor)
        .where(_f.user_id == user_id, or_(_f.blocked_until.is_(None), _f.blocked_until <= now))
        .values(blocked_until=until)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def succeeded(db: AsyncSession, user_id: uuid.UUID) -> None:
    await db.execute(
        update(TotpFactor)
        .where(_f.user_id == user_id)
        .values(failures=0, blocked_until=None)
        .execution_options(synchronize_session=False)
    )


async def remove(db: AsyncSession, user_id: uuid.UUID) -> int:
    """The factor and its recovery codes; how many factor rows went (0: none was there)."""
    await db.execute(
        delete(RecoveryCode)
        .where(_r.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
    result = await db.execute(
        delete(TotpFactor).where(_f.user_id == user_id).execution_options(synchronize_session=False)
    )
    return _rowcount(result)


# --- recovery codes --------------------------------------------------------------------------


async def replace_codes(
    db: AsyncSession, user_id: uuid.UUID, hashes: list[str], now: datetime
) -> None:
    """A new set; the old one (used or not) stops working."""
    await db.execute(
        delete(RecoveryCode)
        .where(_r.user_id == user_id)
        .execution_options(synchronize_session=False)
    )
    rows = [
        {"id": uuid.uuid4(), "user_id": user_id, "code_hash": h, "created_at": now} for h in hashes
    ]
    await db.execute(insert(RecoveryCode), rows)


async def spend_code(
    db: AsyncSession, user_id: uuid.UUID, candidates: list[str], now: datetime
) -> bool:
    """Use an unused code of this account: of twenty parallel uses exactly one gets rowcount 1."""
    result = await db.execute(
        update(RecoveryCode)
        .where(_r.user_id == user_id, _r.code_hash.in_(candidates), _r.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def codes_left(db: AsyncSession, user_id: uuid.UUID) -> int:
    query = select(func.count()).where(_r.user_id == user_id, _r.used_at.is_(None))
    return int((await db.execute(query)).scalar_one())


# --- sign-in challenges ----------------------------------------------------------------------


async def add_challenge(
    db: AsyncSession,
    user_id: uuid.UUID,
    client_id: str,
    device_token: str | None,
    now: datetime,
    expires_at: datetime,
) -> uuid.UUID:
    challenge_id = uuid.uuid4()
    await db.execute(
        insert(MfaChallenge).values(
            id=challenge_id,
            user_id=user_id,
            client_id=client_id,
            device_token=device_token,
            created_at=now,
            expires_at=expires_at,
            attempts=0,
        )
    )
    return challenge_id


@dataclass(frozen=True)
class ChallengeState:
    user_id: uuid.UUID
    client_id: str
    device_token: str | None


async def attempt_challenge(
    db: AsyncSession, challenge_id: uuid.UUID, now: datetime, max_attempts: int
) -> ChallengeState | None:
    """Count one code against a live challenge (unused, unexpired, fewer than
    ``max_attempts`` codes so far) and return what it holds; None if it is not live."""
    result = await db.execute(
        update(MfaChallenge)
        .where(
            _c.id == challenge_id,
            _c.used_at.is_(None),
            _c.expires_at > now,
            _c.attempts < max_attempts,
        )
        .values(attempts=_c.attempts + 1)
        .returning(_c.user_id, _c.client_id, _c.device_token)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    return None if row is None else ChallengeState(*row)


async def spend_challenge(db: AsyncSession, challenge_id: uuid.UUID, now: datetime) -> bool:
    result = await db.execute(
        update(MfaChallenge)
        .where(_c.id == challenge_id, _c.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def purge_challenges(db: AsyncSession, before: datetime) -> None:
    """Challenges that expired before ``before`` are of no use to anyone."""
    await db.execute(
        delete(MfaChallenge)
        .where(_c.expires_at < before)
        .execution_options(synchronize_session=False)
    )
