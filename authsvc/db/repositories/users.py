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

from fastapi_users_db_sqlalchemy import SQLAlchemyUserDatabase
from sqlalchemy import Select, delete, func, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from authsvc.db.models import AuditEvent, User
from authsvc.errors import NotFound
from authsvc.security.identifiers import normalize_email

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


# --- conditional writes: single use under concurrency -------------------------------------------
# Each is one UPDATE whose WHERE states what the caller read. The database applies concurrent
# ones one after another and re-checks the condition for each (PostgreSQL re-reads the row it
# waited for; SQLite runs one writer at a time), so exactly one of them matches. A read followed
# by a write would let every racer see the old value and win.


async def replace_password_hash(
    session: AsyncSession, user_id: uuid.UUID, old_hash: str, new_hash: str
) -> bool:
    """Set the hash only if it is still ``old_hash``; False when someone changed it first.
    A pending email change dies with the old password: whoever asked for it may be who the
    password is being reset against."""
    result = await session.execute(
        update(User)
        .where(_columns.id == user_id, _columns.hashed_password == old_hash)
        .values(hashed_password=new_hash, pending_email=None, pending_email_at=None)
        .execution_options(synchronize_session=False)  # the caller reloads the user
    )
    return bool(getattr(result, "rowcount", 0))


async def replace_email(
    session: AsyncSession, user_id: uuid.UUID, current: str, new: str, *, verified: bool
) -> bool:
    """Set the address only if it is still exactly ``current``; False otherwise. A pending
    change (``pending_email``) dies with it: its link no longer matches."""
    result = await session.execute(
        update(User)
        .where(_columns.id == user_id, _columns.email == current)
        .values(
            email=new,
            email_key=normalize_email(new),
            is_verified=verified,
            pending_email=None,
            pending_email_at=None,
        )
        .execution_options(synchronize_session=False)  # the caller reloads the user
    )
    return bool(getattr(result, "rowcount", 0))


async def confirm_pending_email(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    current: str,
    pending: str,
    requested_at: datetime,
) -> bool:
    """Move the account to its pending address (verified: the link reached it), only if the
    account still has ``current`` and exactly this pending request; False otherwise."""
    result = await session.execute(
        update(User)
        .where(
            _columns.id == user_id,
            _columns.email == current,
            _columns.pending_email == pending,
            _columns.pending_email_at == requested_at,
        )
        .values(
            email=pending,
            email_key=normalize_email(pending),
            is_verified=True,
            pending_email=None,
            pending_email_at=None,
        )
        .execution_options(synchronize_session=False)  # the caller reloads the user
    )
    return bool(getattr(result, "rowcount", 0))


async def email_taken(session: AsyncSession, email: str, *, by_other_than: uuid.UUID) -> bool:
    query = select(_columns.id).where(
        _columns.email_key == normalize_email(email), _columns.id != by_other_than
    )
    return (await session.scalar(query.limit(1))) is not None


async def latest_email_change(
    session: AsyncSession, user_id: uuid.UUID, action: str
) -> uuid.UUID | None:
    """The id of the audit event of the user's most recent email change (audited as
    ``action``), if any."""
    query = (
        select(AuditEvent.id)
        .where(
            AuditEvent.target_type == "user",
            AuditEvent.target_id == str(user_id),
            AuditEvent.action == action,
        )
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(1)
    )
    found: uuid.UUID | None = await session.scalar(query)
    return found


# --- the user database fastapi-users works through ----------------------------------------------


class UserDatabase(SQLAlchemyUserDatabase[User, uuid.UUID]):
    """fastapi-users' SQLAlchemy adapter, with two changes.

    * Addresses are found by ``email_key`` (``authsvc.security.identifiers.normalize_email``),
      the same key the per-account login limit counts on, not by the database's ``lower()``.
    * An update or deletion that finds the row gone (a concurrent ``DELETE``) is a 404
      ``USER_NOT_FOUND`` with nothing written, not an ORM error and a 500.
    """

    async def get_by_email(self, email: str) -> User | None:
        statement = select(User).where(_columns.email_key == normalize_email(email))
        return await self._get_user(statement)

    async def update(self, user: User, update_dict: dict[str, Any]) -> User:
        for key, value in update_dict.items():
            setattr(user, key, value)
        self.session.add(user)
        try:
            await self.session.commit()
        except StaleDataError:
            # The UPDATE matched no row: deleted since it was read (there is no version column).
            await self.session.rollback()
            raise _user_gone() from None
        # populate_existing: reload the row, or learn that it was deleted after our commit.
        fresh = await self.session.get(User, user.id, populate_existing=True)
        if fresh is None:
            raise _user_gone()
        return fresh

    async def delete(self, user: User) -> None:
        result = await self.session.execute(
            delete(User).where(_columns.id == user.id).execution_options(synchronize_session=False)
        )
        if not getattr(result, "rowcount", 0):
            # Someone deleted it first: keep nothing of this request (its audit event too).
            await self.session.rollback()
            raise _user_gone()
        await self.session.commit()
        self.session.expunge(user)


def _user_gone() -> NotFound:
    return NotFound("No such user.", code="USER_NOT_FOUND")
