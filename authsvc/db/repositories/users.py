"""Queries on users that fastapi-users' adapter does not offer. No commits, no HTTP.

The admin list is ordered by ``(created_at, id)`` and paged by key ("keyset"): a page starts
after the last row of the previous one, which the client carries as an opaque cursor. The
database seeks to that position in an index instead of walking every skipped row, so the
millionth user comes as fast as the first. ``OFFSET`` is still accepted for old clients.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, func, literal, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import User

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR_VERSION = "u1"
# What a cursor can be: base64url without padding, of a bounded length.
_CURSOR_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class UserFilter:
    email_prefix: str | None = None
    is_active: bool | None = None
    is_verified: bool | None = None


@dataclass(frozen=True)
class UserCursor:
    """A position in the list's order: the ``(created_at, id)`` of the last row of a page."""

    created_at: datetime
    id: uuid.UUID

    @classmethod
    def of(cls, user: User) -> UserCursor:
        return cls(user.created_at, user.id)

    def encode(self) -> str:
        """Opaque to clients: base64url of ``u1:<microseconds since 1970 UTC>:<id hex>``."""
        micros = (self.created_at - _EPOCH) // _MICROSECOND
        raw = f"{_CURSOR_VERSION}:{micros}:{self.id.hex}".encode("ascii")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    @classmethod
    def decode(cls, cursor: str) -> UserCursor:
        """The position ``cursor`` encodes; ``ValueError`` unless it is exactly what
        ``encode`` produces (so there is one spelling of each position)."""
        if not _CURSOR_SHAPE.fullmatch(cursor):
            raise ValueError("not a cursor")
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            version, micros, hex_id = raw.split(":")
            if version != _CURSOR_VERSION:
                raise ValueError("unknown cursor version")
            decoded = cls(_EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=hex_id))
        except (ValueError, UnicodeDecodeError, binascii.Error, OverflowError):
            raise ValueError("not a cursor") from None
        if decoded.encode() != cursor:
            raise ValueError("not a cursor")
        return decoded


@dataclass(frozen=True)
class UserListPage:
    users: list[User]
    next_cursor: UserCursor | None
    total: int | None


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


S = TypeVar("S", bound=Select[Any])


# fastapi-users declares the columns as plain attributes for type checkers; the table's
# columns carry the SQL operators.
_columns = User.__table__.c


def _filtered(statement: S, filters: UserFilter) -> S:
    if filters.email_prefix:
        # A constant-prefix LIKE: PostgreSQL can serve it from ix_user_email_lower_pattern
        # (text_pattern_ops, migration 0006) whatever the database's collation.
        pattern = _escape_like(filters.email_prefix.lower()) + "%"
        statement = statement.where(func.lower(_columns.email).like(pattern, escape="\\"))
    if filters.is_active is not None:
        statement = statement.where(_columns.is_active.is_(filters.is_active))
    if filters.is_verified is not None:
        statement = statement.where(_columns.is_verified.is_(filters.is_verified))
    return statement


def page_query(
    filters: UserFilter, *, limit: int, offset: int = 0, after: UserCursor | None = None
) -> Select[tuple[User]]:
    """Up to ``limit`` users matching ``filters``, oldest first, after ``after`` (keyset) or
    after skipping ``offset`` (slow when deep: the database walks every skipped row)."""
    statement = _filtered(select(User), filters)
    if after is not None:
        # A row-value comparison: the database seeks to created_at in ix_user_created_at and
        # only sorts rows sharing that instant, so a deep page costs what the first one does.
        position = tuple_(
            literal(after.created_at, _columns.created_at.type),
            literal(after.id, _columns.id.type),
        )
        statement = statement.where(tuple_(_columns.created_at, _columns.id) > position)
    statement = statement.order_by(_columns.created_at, _columns.id).limit(limit)
    return statement.offset(offset) if offset else statement


def count_query(filters: UserFilter) -> Select[tuple[int]]:
    return _filtered(select(func.count()).select_from(User), filters)


async def list_users(
    session: AsyncSession,
    filters: UserFilter,
    *,
    limit: int,
    offset: int = 0,
    after: UserCursor | None = None,
    count: bool = False,
) -> UserListPage:
    """One page of users, oldest first, the cursor of the next page (``None`` on the last),
    and, when ``count``, the number of users matching the filters over all pages."""
    if filters.email_prefix and session.get_bind().dialect.name == "postgresql":
        # asyncpg prepares statements; after five runs PostgreSQL may switch one to a generic
        # plan, which cannot see the pattern's prefix and so walks the whole list filtering
        # (0.5 s at a million users instead of 0.5 ms; bench/users_scale.py shows both).
        # Planning each search afresh costs a fraction of a millisecond. SET LOCAL ends with
        # the transaction.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    # One row more than asked tells whether another page follows, without a second query.
    query = page_query(filters, limit=limit + 1, offset=offset, after=after)
    rows = list((await session.scalars(query)).all())
    users, more = rows[:limit], len(rows) > limit
    total = None
    if count:
        total = int((await session.scalar(count_query(filters))) or 0)
    return UserListPage(users, UserCursor.of(users[-1]) if more else None, total)
