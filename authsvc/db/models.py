"""ORM models. The schema itself is created only by the Alembic migrations in ``alembic/``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID
from fastapi_users_db_sqlalchemy.generics import GUID
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates
from sqlalchemy.types import TypeDecorator

from authsvc.security.identifiers import normalize_email

# Deterministic constraint names, so migrations can refer to them on every engine.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every engine (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(SQLAlchemyBaseUserTableUUID, Base):
    # One account per address whatever its case, even under concurrent registrations.
    __table_args__ = (
        Index("ix_user_email_lower", text("lower(email)"), unique=True),
        # PostgreSQL only (migration 0006): lower(email) LIKE 'prefix%' under any collation.
        Index(
            "ix_user_email_lower_pattern",
            func.lower(text("email")).label("email_lower"),
            postgresql_ops={"email_lower": "text_pattern_ops"},
        ).ddl_if(dialect="postgresql"),
        # One account per address whatever its spelling (migration 0008): see email_key.
        Index("ix_user_email_key", "email_key", unique=True),
    )

    # fastapi-users owns id, email, hashed_password, is_active, is_superuser, is_verified.
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, nullable=False, index=True
    )
    # Bumped whenever the user's effective permissions may have changed; access tokens carry
    # the value they were issued under, and our guards refuse a token whose value is older.
    authz_version: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # Attributes for the Cedar policies (department, ...), checked against the policy schema.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    # normalize_email(email): what the login limit, the lookup and uniqueness compare. Kept in
    # step by the validator below; a bulk UPDATE of email must set it too (see replace_email).
    email_key: Mapped[str] = mapped_column(String(1024), nullable=False)
    # An address the owner asked to move to (migration 0009): the account keeps ``email``
    # until a link sent to the new address confirms it.
    pending_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    pending_email_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @validates("email")
    def _keep_email_key(self, _key: str, value: str) -> str:
        self.email_key = normalize_email(value)
        return value


role_permissions = Table(
    "role_permissions",
    Base.metadata,
    Column("role_id", GUID, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "permission_id", GUID, ForeignKey("permissions.id", ondelete="CASCADE"), primary_key=True
    ),
)

role_parents = Table(
    "role_parents",
    Base.metadata,
    Column("role_id", GUID, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    Column("parent_id", GUID, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)

user_roles = Table(
    "user_roles",
    Base.metadata,
    Column("user_id", GUID, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "role_id", GUID, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True, index=True
    ),
)


class Permission(Base):
    __tablename__ = "permissions"

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(String(500), default="", nullable=False)
    # Declared by authsvc itself (synced at start-up); others are added by admins.
    builtin: Mapped[bool] = mapped_column(default=False, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(String(500), default="", nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_actor_id", "actor_id"),
        Index("ix_audit_events_target", "target_type", "target_id"),
        # The chain's order: gap-free 1..N, assigned under the head row's lock at flush
        # (services/audit_chain.py). An index, not a constraint: SQLite adds it by ALTER.
        Index("ix_audit_events_seq", "seq", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # No foreign key: the trail outlives the users and roles it mentions.
    actor_id: Mapped[uuid.UUID | None] = mapped_column(GUID, nullable=True)
    actor_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target_type: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[str] = mapped_column(String(128), nullable=False)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # As long as the request ids observability.RequestContext accepts from a client.
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # Filled by the flush listener in services/audit_chain.py, never by callers.
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    prev_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditChainHead(Base):
    """One row (id 1, seeded by migration 0010): the last event's seq and digest.

    Every transaction that adds audit events locks this row to extend the chain, so the
    chain has one order across workers and hosts; see services/audit_chain.py.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)


class Session(Base):
    """One login: the family of refresh tokens rotated from it, and what revoked it."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(256), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # How the user authenticated when the session began (RFC 8176 "amr" values, space-separated,
    # e.g. "pwd" or "pwd otp mfa") and when (migration 0011): every access token of the
    # session, refreshed ones too, carries them as ``amr`` and ``auth_time``.
    amr: Mapped[str] = mapped_column(String(64), default="pwd", nullable=False)
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class RefreshToken(Base):
    """A refresh token, stored only as its SHA-256. ``used_at`` is set when it is rotated."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_session_id", "session_id"),)

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Replays honoured after used_at, inside the grace window: capped, counted by a conditional
    # UPDATE (repositories.sessions.claim_replay), so concurrency cannot exceed the cap.
    reuse_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class OAuthClient(Base):
    """A service client (client_credentials grant, introspection, revocation)."""

    __tablename__ = "oauth_clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    # SHA-256 of a 256-bit random secret: a slow hash adds nothing to that much entropy.
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    permissions: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(GUID, nullable=True)


class RevokedToken(Base):
    """A service (client_credentials) access token revoked before it expired (RFC 7009).

    User tokens are revoked through their session (``sid``); service tokens have none, so their
    ``jti`` is kept here until the token would have expired anyway, then purged.
    """

    __tablename__ = "revoked_tokens"
    __table_args__ = (Index("ix_revoked_tokens_expires_at", "expires_at"),)

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Deleting the client ends its tokens anyway (introspection asks for the client).
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("oauth_clients.id", ondelete="CASCADE"), nullable=False
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class LoginThrottle(Base):
    """Consecutive failed sign-ins for one account identifier (migration 0009).

    Keyed by ``normalize_email`` of the submitted username, whether or not an account has it:
    an unknown address is throttled exactly like a known one, so throttling tells nobody which
    addresses exist. In the database, so every worker and host counts the same failures.
    """

    __tablename__ = "login_throttles"

    account_key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # No password is evaluated for this identifier before this instant (untrusted devices).
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the owner was told that the account is being throttled (once an episode).
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TrustedDevice(Base):
    """A device that has signed in to an account before (OWASP "device cookies").

    The app keeps a signed device token naming this row; a sign-in presenting it is judged by
    this device's own failures, not by the account's throttle (migration 0009).
    """

    __tablename__ = "trusted_devices"
    __table_args__ = (Index("ix_trusted_devices_user_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="CASCADE"), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TotpFactor(Base):
    """A user's TOTP second factor (RFC 6238), one per account (migration 0011).

    ``secret`` is encrypted (never stored in the clear). ``confirmed_at`` is None while the
    enrolment waits for its first code: such a factor never asks for a code at sign-in.
    ``last_step`` is the last time step a code was accepted for: a code of that step or an
    earlier one is refused (no replay). ``failures``/``blocked_until`` limit guesses per account.
    """

    __tablename__ = "totp_factors"

    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True
    )
    secret: Mapped[str] = mapped_column(String(512), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class RecoveryCode(Base):
    """One single-use recovery code, stored only as a keyed hash (migration 0011)."""

    __tablename__ = "recovery_codes"
    __table_args__ = (Index("ix_recovery_codes_user_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="CASCADE"), nullable=False
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MfaChallenge(Base):
    """A password sign-in waiting for its second factor (migration 0011): the ``mfa_token``
    names it. Single use (``used_at`` set by a conditional UPDATE), short-lived, bound to the
    account and the client that asked; ``attempts`` bounds the codes tried with it."""

    __tablename__ = "mfa_challenges"
    __table_args__ = (Index("ix_mfa_challenges_expires_at", "expires_at"),)

    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        GUID, ForeignKey("user.id", ondelete="CASCADE"), nullable=False
    )
    client_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # The device token presented with the password, if any, carried to the second step.
    device_token: Mapped[str | None] = mapped_column(String(512), nullable=True)
