"""Administering accounts: the first superuser (``authsvc create-admin``, outside any HTTP
request), and what the admin API does to other people's accounts (``UserAdminService``).

Every change through the admin API is checked against the no-escalation rule and the
last-administrator rule, and commits once, with its audit event: a refused or failed change
leaves neither behind.
"""

from __future__ import annotations

import uuid

from fastapi import Request
from fastapi_users import exceptions
from fastapi_users_db_sqlalchemy import SQLAlchemyUserDatabase
from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.config import Settings
from authsvc.db import migrations
from authsvc.db.models import Session, User
from authsvc.db.repositories import roles as roles_repo
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.db.repositories.users import UserCursor, UserFilter, UserListPage, list_users
from authsvc.db.session import create_engine, create_sessionmaker
from authsvc.errors import BadRequest, InvalidInput
from authsvc.schemas.users import AdminUserUpdate
from authsvc.security.password_policy import PasswordPolicy
from authsvc.security.passwords import hasher_from_settings
from authsvc.services.roles import RoleService
from authsvc.services.users import UserManager

__all__ = ["AdminCreationError", "UserAdminService", "UserFilter", "create_admin"]

_EMAIL = TypeAdapter(EmailStr)


class AdminCreationError(Exception):
    """The admin could not be created; the message says why, for the operator."""


async def create_admin(settings: Settings, email: str, password: str) -> uuid.UUID:
    try:
        email = _EMAIL.validate_python(email)
    except ValidationError:
        raise AdminCreationError(f"{email!r} is not a valid email address") from None
    # No account has a second factor at creation.
    reason = await PasswordPolicy.from_settings(settings).validate(password, email=email)
    if reason is not None:
        raise AdminCreationError(reason)
    hasher = hasher_from_settings(settings, max_concurrency=1)
    hashed = await hasher.hash(password)

    if settings.migrate_on_start:
        import anyio.to_thread

        await anyio.to_thread.run_sync(migrations.upgrade, settings.resolved_database_url)
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            users: SQLAlchemyUserDatabase[User, uuid.UUID] = SQLAlchemyUserDatabase(db, User)
            if await users.get_by_email(email) is not None:
                raise AdminCreationError(f"a user with email {email} already exists")
            try:
                user = await users.create(
                    {
                        "email": email,
                        "hashed_password": hashed,
                        "is_active": True,
                        "is_superuser": True,
                        "is_verified": True,
                    }
                )
            except IntegrityError:
                raise AdminCreationError(f"a user with email {email} already exists") from None
            return user.id
    finally:
        await engine.dispose()


def _snapshot(user: User) -> dict[str, object]:
    return {
        "email": user.email,
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
        "is_verified": user.is_verified,
        "attributes": dict(user.attributes or {}),
    }


class UserAdminService:
    """``actor`` acts on other users' accounts. ``manager`` (fastapi-users' user manager, on
    the same database session) is needed only to update and delete."""

    def __init__(
        self,
        db: AsyncSession,
        actor: Principal,
        client_ip: str | None,
        *,
        named_roles: frozenset[str] | None = None,
        manager: UserManager | None = None,
    ) -> None:
        self.db = db
        self.actor = actor
        self.roles = RoleService(db, actor, client_ip, named_roles)
        self.manager = manager

    async def users(
        self,
        filters: UserFilter,
        *,
        limit: int,
        offset: int,
        cursor: str | None,
        count: bool,
    ) -> UserListPage:
        """One page, oldest first: after ``cursor`` (a ``next_cursor`` handed out before) or
        after ``offset`` users, not both (422 ``USER_CURSOR_WITH_OFFSET``);
        422 ``USER_CURSOR_INVALID`` for a cursor this list did not hand out."""
        after = None
        if cursor is not None:
            if offset:
                raise InvalidInput(
                    "Page with either cursor or offset, not both.", code="USER_CURSOR_WITH_OFFSET"
                )
            try:
                after = UserCursor.decode(cursor)
            except ValueError:
                raise InvalidInput(
                    "cursor is not a next_cursor this list handed out.", code="USER_CURSOR_INVALID"
                ) from None
        return await list_users(
            self.db, filters, limit=limit, offset=offset, after=after, count=count
        )

    def own_profile(self, user: User) -> bool:
        """The own-profile policy lets anyone edit themself: then only what /users/me allows."""
        return self.actor.user_id == user.id and not self.actor.has("users:write")

    async def update(
        self, user: User, changes: AdminUserUpdate, request: Request | None = None
    ) -> User:
        """Apply ``changes`` (the policies allowed them, attributes included) and audit them."""
        own_profile = self.own_profile(user)
        before = _snapshot(user)
        if not own_profile:
            await self.roles.guard_target(user)
        superuser_changes = self.roles.check_superuser_flag(changes.is_superuser, user)
        await self.roles.guard_admin_change(user, changes.is_active, changes.is_superuser)
        if superuser_changes:
            # Their tokens say "permissions": ["*"] (or lack it): make them stale either way.
            # Incremented by the database: ``user`` was read before the lock, and writing back
            # that value + 1 could equal a version a concurrent change has issued tokens for.
            await roles_repo.bump_versions(self.db, user_ids=[user.id])
        fields = changes.model_dump(exclude_unset=True, exclude={"password", "current_password"})
        after = {**before, **fields, "password_changed": changes.password is not None}
        self.roles.audit.record("user.update", "user", str(user.id), before, after)
        try:
            # Commits the change and the audit event together.
            return await self._manager.update(changes, user, safe=own_profile, request=request)
        except exceptions.InvalidPasswordException as exc:
            raise BadRequest(
                str(exc.reason),
                code="UPDATE_USER_INVALID_PASSWORD",
                data={"reason": str(exc.reason)},
            ) from None
        except exceptions.UserAlreadyExists:
            raise BadRequest(
                "Another account uses this email.", code="UPDATE_USER_EMAIL_ALREADY_EXISTS"
            ) from None

    async def delete(self, user: User, request: Request | None = None) -> None:
        await self.roles.guard_target(user)
        await self.roles.guard_admin_change(user, is_active=False, is_superuser=None)
        self.roles.audit.record("user.delete", "user", str(user.id), _snapshot(user), None)
        await self._manager.delete(user, request=request)  # commits the audit event with it

    async def sessions(self, user_id: uuid.UUID) -> list[Session]:
        """The user's live sessions, most recently used first; 404 ``USER_NOT_FOUND``."""
        user = await self.roles.user(user_id)
        return await sessions_repo.live_sessions(self.db, user.id)

    async def end_sessions(self, user_id: uuid.UUID) -> int:
        """End every session of the user (audited); 403 for an account holding a power the
        actor lacks. Returns how many were live."""
        user = await self.roles.user(user_id)
        await self.roles.guard_target(user)
        ended = await sessions_repo.revoke_all(self.db, user.id, "admin")
        after = {"ended": ended}
        self.roles.audit.record("user.sessions.revoke", "user", str(user.id), None, after)
        await self.db.commit()
        return ended

    @property
    def _manager(self) -> UserManager:
        if self.manager is None:
            raise RuntimeError("UserAdminService needs the user manager to change accounts")
        return self.manager
