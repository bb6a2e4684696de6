"""Queries on users that fastapi-users' adapter does not offer. No commits, no HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import User


@dataclass(frozen=True)
class UserFilter:
    email_prefix: str | None = None
    is_active: bool | None = None
    is_verified: bool | None = None


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


S = TypeVar("S", bound=Select[Any])


# fastapi-users declares the columns as plain attributes for type checkers; the table's
# columns carry the SQL operators.
_columns = User.__table__.c


def _filtered(statement: S, filters: UserFilter) -> S:
    if filters.email_prefix:
        pattern = _escape_like(filters.email_prefix.lower()) + "%"
        statement = statement.where(func.lower(_columns.email).like(pattern, escape="\\"))
    if filters.is_active is not None:
        statement = statement.where(_columns.is_active.is_(filters.is_active))
    if filters.is_verified is not None:
        statement = statement.where(_columns.is_verified.is_(filters.is_verified))
    return statement


async def list_users(
    session: AsyncSession, filters: UserFilter, *, limit: int, offset: int
) -> tuple[list[User], int]:
    """One page of users, oldest first, and the total number matching the filters."""
    page = _filtered(select(User), filters).order_by(_columns.created_at, _columns.id)
    items = (await session.scalars(page.limit(limit).offset(offset))).all()
    count = _filtered(select(func.count()).select_from(User), filters)
    total = (await session.scalar(count)) or 0
    return list(items), int(total)
