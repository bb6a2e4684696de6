"""Queries on service clients and their revoked tokens. No commits, no HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import OAuthClient, RevokedToken


async def get(db: AsyncSession, client_id: str) -> OAuthClient | None:
    return await db.get(OAuthClient, client_id)


async def all_clients(db: AsyncSession) -> Sequence[OAuthClient]:
    """Every client, oldest first."""
    return (await db.scalars(select(OAuthClient).order_by(OAuthClient.created_at))).all()


async def is_revoked(db: AsyncSession, jti: str) -> bool:
    found = await db.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti))
    return found is not None


async def add_revoked(
    db: AsyncSession, *, jti: str, client_id: str, expires_at: datetime, now: datetime
) -> bool:
    """Record a revoked token; revoking it twice, even concurrently, keeps the first row.
    Rows past their token's expiry are dropped on the way (the token fails on its own then).
    True when this call added the row (the audit trail records only that one)."""
    await db.execute(delete(RevokedToken).where(RevokedToken.expires_at <= now))
    values = {"jti": jti, "client_id": client_id, "expires_at": expires_at, "revoked_at": now}
    dialect = postgresql if db.get_bind().dialect.name == "postgresql" else sqlite
    added = await db.scalar(
        dialect.insert(RevokedToken)
        .values(values)
        .on_conflict_do_nothing(index_elements=["jti"])
        .returning(RevokedToken.jti)
    )
    return added is not None
