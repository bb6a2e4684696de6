"""Queries on service clients' tokens. No commits, no HTTP."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import OAuthClient, RevokedToken


async def client_and_revocation(
    db: AsyncSession, client_id: str, jti: str
) -> tuple[OAuthClient | None, bool]:
    """The client a service token names and whether that token was revoked, in one query."""
    query = (
        select(OAuthClient, RevokedToken.jti)
        .outerjoin(RevokedToken, RevokedToken.jti == jti)
        .where(OAuthClient.id == client_id[:64])
    )
    row = (await db.execute(query)).first()
    if row is None:
        return None, False
    return row[0], row[1] is not None
