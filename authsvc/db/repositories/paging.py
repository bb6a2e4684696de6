"""Offset pages of any query, with the total. No commits, no HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


async def page(
    db: AsyncSession, query: Select[tuple[T]], *, limit: int, offset: int
) -> tuple[Sequence[T], int]:
    """One page of ``query`` and the number of rows it has in all."""
    total = await db.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = (await db.scalars(query.limit(limit).offset(offset))).all()
    return items, int(total or 0)
