"""Queries on sign-in throttles: per account identifier (``login_throttles``) and per trusted
device (``trusted_devices``). No commits, no HTTP.

Every change that decides whether a password is evaluated is one conditional statement, so
that parallel requests (other workers, other hosts) cannot all pass the same check: counting
is ``failures = failures + 1`` in the database, and claiming an attempt moves ``blocked_until``
forward only if it has passed (rowcount 0: someone else claimed it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import LoginThrottle, TrustedDevice, User


@dataclass(frozen=True)
class ThrottleState:
    failures: int
    last_failure_at: datetime | None
    blocked_until: datetime | None
    notified_at: datetime | None


@dataclass(frozen=True)
class DeviceState:
    id: uuid.UUID
    user_id: uuid.UUID
    email_key: str  # of the account the device belongs to
    failures: int
    blocked_until: datetime | None
    revoked_at: datetime | None


_t = LoginThrottle.__table__.c
_d = TrustedDevice.__table__.c

# The devices an account keeps trusting, most recently used first: every sign-in without a
# device token adds one, so a script signing in again and again must not grow the table.
MAX_DEVICES_PER_ACCOUNT = 20


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


# --- accounts --------------------------------------------------------------------------------


async def get(db: AsyncSession, key: str) -> ThrottleState | None:
    query = select(_t.failures, _t.last_failure_at, _t.blocked_until, _t.notified_at).where(
        _t.account_key == key
    )
    row = (await db.execute(query)).first()
    return None if row is None else ThrottleState(*row)


async def add_failure(db: AsyncSession, key: str, now: datetime) -> ThrottleState:
    """Count one failure, creating the row for the first: one statement, atomic on both
    engines (``INSERT .. ON CONFLICT DO UPDATE .. RETURNING``). The state after it."""
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(LoginThrottle).values(account_key=key, failures=1, last_failure_at=now)
    statement = insert.on_conflict_do_update(
        index_elements=[_t.account_key],
        set_={"failures": _t.failures + 1, "last_failure_at": now},
    ).returning(_t.failures, _t.last_failure_at, _t.blocked_until, _t.notified_at)
    row = (await db.execute(statement)).one()
    return ThrottleState(*row)


async def hold(db: AsyncSession, key: str, until: datetime) -> None:
    """No attempt before ``until``; never moves an existing hold back (a slower parallel
    failure with a smaller count must not shorten a longer delay)."""
    await db.execute(
        update(LoginThrottle)
        .where(_t.account_key == key, or_(_t.blocked_until.is_(None), _t.blocked_until < until))
        .values(blocked_until=until)
        .execution_options(synchronize_session=False)
    )


async def claim(db: AsyncSession, key: str, now: datetime, until: datetime, below: int) -> bool:
    """Take the one attempt due now: True if this caller may evaluate it (the hold had passed,
    and fewer than ``below`` failures), and nobody else may before ``until``."""
    result = await db.execute(
        update(LoginThrottle)
        .where(
            _t.account_key == key,
            _t.failures < below,
            or_(_t.blocked_until.is_(None), _t.blocked_until <= now),
        )
        .values(blocked_until=until)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def mark_notified(db: AsyncSession, key: str, now: datetime) -> bool:
    """True for the one caller that gets to tell the owner in this episode."""
    result = await db.execute(
        update(LoginThrottle)
        .where(_t.account_key == key, _t.notified_at.is_(None))
        .values(notified_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def clear(db: AsyncSession, key: str) -> int:
    """End the episode: no failures, no hold, a new notice next time."""
    result = await db.execute(
        delete(LoginThrottle)
        .where(_t.account_key == key)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


# --- devices ---------------------------------------------------------------------------------


async def device(db: AsyncSession, device_id: uuid.UUID) -> DeviceState | None:
    """The device and its account's comparison key, in one query."""
    query = (
        select(_d.id, _d.user_id, User.email_key, _d.failures, _d.blocked_until, _d.revoked_at)
        .join(User, User.__table__.c.id == _d.user_id)
        .where(_d.id == device_id)
    )
    row = (await db.execute(query)).first()
    return None if row is None else DeviceState(*row)


def add_device(db: AsyncSession, user_id: uuid.UUID, now: datetime) -> uuid.UUID:
    """A new trusted device (inserted at the next flush); its id, for the token."""
    device_id = uuid.uuid4()
    db.add(TrustedDevice(id=device_id, user_id=user_id, created_at=now, last_used_at=now))
    return device_id


async def keep_recent_devices(db: AsyncSession, user_id: uuid.UUID, keep: int) -> None:
    """Let go of the account's devices beyond the ``keep`` most recently used (one statement;
    their tokens then count as none)."""
    recent = (
        select(_d.id)
        .where(_d.user_id == user_id)
        .order_by(_d.last_used_at.desc(), _d.id)
        .limit(keep)
        .scalar_subquery()
    )
    await db.execute(
        delete(TrustedDevice)
        .where(_d.user_id == user_id, _d.id.not_in(recent))
        .execution_options(synchronize_session=False)
    )


async def add_device_failure(db: AsyncSession, device_id: uuid.UUID) -> int:
    result = await db.execute(
        update(TrustedDevice)
        .where(_d.id == device_id)
        .values(failures=_d.failures + 1)
        .returning(_d.failures)
        .execution_options(synchronize_session=False)
    )
    return int(result.scalar_one())


async def hold_device(db: AsyncSession, device_id: uuid.UUID, until: datetime) -> None:
    await db.execute(
        update(TrustedDevice)
        .where(_d.id == device_id, or_(_d.blocked_until.is_(None), _d.blocked_until < until))
        .values(blocked_until=until)
        .execution_options(synchronize_session=False)
    )


async def claim_device(
    db: AsyncSession, device_id: uuid.UUID, now: datetime, until: datetime
) -> bool:
    result = await db.execute(
        update(TrustedDevice)
        .where(_d.id == device_id, or_(_d.blocked_until.is_(None), _d.blocked_until <= now))
        .values(blocked_until=until)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def device_signed_in(db: AsyncSession, device_id: uuid.UUID, now: datetime) -> None:
    await db.execute(
        update(TrustedDevice)
        .where(_d.id == device_id)
        .values(failures=0, blocked_until=None, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
