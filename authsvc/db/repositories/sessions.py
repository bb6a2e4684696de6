"""Queries on login sessions and refresh tokens. No commits, no HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import RefreshToken, Session, User, utcnow

_users = User.__table__.c


async def user_with_session(
    db: AsyncSession, user_id: uuid.UUID, session_id: uuid.UUID | None
) -> tuple[User | None, Session | None]:
    """The user and the token's session in one query (the guard's only query)."""
    query = (
        select(User, Session)
        .outerjoin(Session, and_(Session.id == session_id, Session.user_id == _users.id))
        .where(_users.id == user_id)
    )
    row = (await db.execute(query)).first()
    if row is None:
        return None, None
    return row[0], row[1]


def is_live(session: Session | None, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return session is not None and session.revoked_at is None and now < session.expires_at


async def by_token_hash(db: AsyncSession, token_hash: str) -> RefreshToken | None:
    query = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
    return (await db.scalars(query)).one_or_none()


async def claim(db: AsyncSession, token: RefreshToken, now: datetime) -> bool:
    """Spend the token; False if someone spent it first (a concurrent or replayed refresh)."""
    result = await db.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    return bool(getattr(result, "rowcount", 0))


async def claim_replay(
    db: AsyncSession, token: RefreshToken, window_start: datetime, limit: int
) -> bool:
    """Count one more replay of a spent token, if it was spent at or after ``window_start`` and
    fewer than ``limit`` replays were counted. One conditional UPDATE: concurrent replays are
    applied one after another and each re-checks the count, so no more than ``limit`` win."""
    result = await db.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == token.id,
            RefreshToken.used_at.is_not(None),
            RefreshToken.used_at >= window_start,
            RefreshToken.reuse_count < limit,
        )
        .values(reuse_count=RefreshToken.reuse_count + 1)
    )
    return bool(getattr(result, "rowcount", 0))


async def lock_session(db: AsyncSession, session_id: uuid.UUID) -> None:
    """Serialize refreshes of one session from here to the commit: a no-op write to its row
    (PostgreSQL makes a second such transaction wait, and its later reads see the first's
    commit; SQLite has one writer at a time)."""
    await db.execute(
        update(Session).where(Session.id == session_id).values(last_used_at=Session.last_used_at)
    )


async def live_token_count(db: AsyncSession, session_id: uuid.UUID) -> int:
    """Refresh tokens of the session not spent yet."""
    query = select(func.count()).where(
        RefreshToken.session_id == session_id, RefreshToken.used_at.is_(None)
    )
    return int(await db.scalar(query) or 0)


async def revoke(db: AsyncSession, session_ids: list[uuid.UUID], reason: str) -> int:
    if not session_ids:
        return 0
    result = await db.execute(
        update(Session)
        .where(Session.id.in_(session_ids), Session.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    return int(getattr(result, "rowcount", 0))


async def revoke_all(db: AsyncSession, user_id: uuid.UUID, reason: str) -> int:
    result = await db.execute(
        update(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason)
    )
    return int(getattr(result, "rowcount", 0))


async def live_sessions(db: AsyncSession, user_id: uuid.UUID) -> list[Session]:
    query = (
        select(Session)
        .where(Session.user_id == user_id, Session.revoked_at.is_(None))
        .where(Session.expires_at > utcnow())
        .order_by(Session.last_used_at.desc())
    )
    return list((await db.scalars(query)).all())


async def get(db: AsyncSession, session_id: uuid.UUID) -> Session | None:
    return await db.get(Session, session_id)
