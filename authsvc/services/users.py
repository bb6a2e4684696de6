"""The user manager: fastapi-users' ``BaseUserManager`` with our hashing, policy and notifier.

fastapi-users hashes through a synchronous helper, which would run bcrypt on the event loop.
The methods that hash are therefore overridden to await ``PasswordHasher`` (worker threads,
capped); the helper handed to fastapi-users refuses to run on the event loop, so a path we
missed fails loudly in tests instead of silently blocking. Everything else is fastapi-users'.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from typing import Any

import jwt
from fastapi import Request
from fastapi.security import OAuth2PasswordRequestForm
from fastapi_users import BaseUserManager, UUIDIDMixin, exceptions, schemas
from fastapi_users.db import BaseUserDatabase
from fastapi_users.jwt import decode_jwt, generate_jwt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import User
from authsvc.db.repositories import roles as roles_repo
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.errors import InvalidInput, Unauthorized
from authsvc.notify.base import Notifier, Purpose, TokenMessage, build_link
from authsvc.security.password_policy import PasswordPolicy
from authsvc.security.passwords import PasswordHasher

log = logging.getLogger("authsvc.users")

_SELF_READ_ONLY = ("is_active", "is_superuser", "is_verified", "attributes")


class EventLoopHashGuard:
    """The password helper fastapi-users holds. Every hashing path is overridden below."""

    def verify_and_update(self, plain_password: str, hashed_password: str) -> tuple[bool, None]:
        raise RuntimeError("password hashing must go through the async PasswordHasher")

    def hash(self, password: str) -> str:
        raise RuntimeError("password hashing must go through the async PasswordHasher")

    def generate(self) -> str:
        raise RuntimeError("password generation is not used")


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    def __init__(
        self,
        user_db: BaseUserDatabase[User, uuid.UUID],
        *,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        notifier: Notifier,
        token_secret: str,
        verify_lifetime: int,
        reset_lifetime: int,
        public_url: str | None,
        session: AsyncSession,
        default_role: str | None = None,
    ) -> None:
        super().__init__(user_db, password_helper=EventLoopHashGuard())
        self.hasher = hasher
        self.policy = policy
        self.notifier = notifier
        self.public_url = public_url
        self.session = session
        self.default_role = default_role
        # Distinct audiences (set by fastapi-users) keep reset and verify tokens apart; both are
        # HS256 with this secret, so neither can ever pass as an RS256 access token.
        self.reset_password_token_secret = token_secret
        self.verification_token_secret = token_secret
        self.reset_password_token_lifetime_seconds = reset_lifetime
        self.verification_token_lifetime_seconds = verify_lifetime

    # --- passwords -------------------------------------------------------------------------

    async def validate_password(self, password: str, user: schemas.UC | User) -> None:
        reason = self.policy.check(password, email=user.email)
        if reason is not None:
            raise exceptions.InvalidPasswordException(reason=reason)

    async def authenticate(self, credentials: OAuth2PasswordRequestForm) -> User | None:
        try:
            user = await self.get_by_email(credentials.username)
        except exceptions.UserNotExists:
            await self.hasher.dummy_verify(credentials.password)
            return None
        verified, new_hash = await self.hasher.verify_and_update(
            credentials.password, user.hashed_password
        )
        if not verified:
            return None
        if new_hash is not None:
            # Old scheme or cost: store the stronger hash now that we know the password.
            await self.user_db.update(user, {"hashed_password": new_hash})
        return user

    async def create(
        self, user_create: schemas.UC, safe: bool = False, request: Request | None = None
    ) -> User:
        await self.validate_password(user_create.password, user_create)
        if await self.user_db.get_by_email(user_create.email) is not None:
            raise exceptions.UserAlreadyExists()
        # fastapi-users leaves these two helpers unannotated.
        user_dict: dict[str, Any] = (
            user_create.create_update_dict()  # type: ignore[no-untyped-call]
            if safe
            else user_create.create_update_dict_superuser()  # type: ignore[no-untyped-call]
        )
        user_dict["hashed_password"] = await self.hasher.hash(user_dict.pop("password"))
        # The account and its default role land in one transaction, or neither does.
        created = User(**user_dict)
        self.session.add(created)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            # Lost a race with a concurrent registration of the same address.
            await self.session.rollback()
            raise exceptions.UserAlreadyExists() from exc
        if self.default_role:
            role = await roles_repo.get_role(self.session, self.default_role)
            if role is not None:
                await roles_repo.assign(self.session, created.id, role.id)
        await self.session.commit()
        await self.on_after_register(created, request)
        return created

    async def update(
        self,
        user_update: schemas.UU,
        user: User,
        safe: bool = False,
        request: Request | None = None,
    ) -> User:
        current_password = getattr(user_update, "current_password", None)
        if safe:
            # The self-service route: refuse instead of silently dropping privileged fields.
            forbidden = sorted(set(_SELF_READ_ONLY) & user_update.model_fields_set)
            if forbidden:
                raise InvalidInput(
                    f"You cannot change {', '.join(forbidden)} on your own account.",
                    code="USER_FIELD_READ_ONLY",
                    data={"fields": forbidden},
                )
            if user_update.password is not None:
                if not current_password or not await self.hasher.verify(
                    current_password, user.hashed_password
                ):
                    raise Unauthorized(
                        "Changing the password needs the correct current_password.",
                        code="CURRENT_PASSWORD_INVALID",
                    )
        return await super().update(user_update, user, safe=safe, request=request)

    async def _update(self, user: User, update_dict: dict[str, Any]) -> User:
        update_dict = dict(update_dict)
        update_dict.pop("current_password", None)
        password = update_dict.pop("password", None)
        if password is not None:
            await self.validate_password(password, user)
            update_dict["hashed_password"] = await self.hasher.hash(password)
            # A new password ends every session (committed with the change below).
            await sessions_repo.revoke_all(self.session, user.id, "password")
        if update_dict.get("is_active") is False and user.is_active:
            await sessions_repo.revoke_all(self.session, user.id, "deactivated")
        try:
            return await super()._update(user, update_dict)
        except IntegrityError as exc:
            await self._rollback()
            raise exceptions.UserAlreadyExists() from exc

    async def _rollback(self) -> None:
        await self.session.rollback()

    # --- password reset ----------------------------------------------------------------------
    # fastapi-users binds a reset token to the current password by a bcrypt hash of the stored
    # hash. An HMAC does the same job (the token dies once the password changes) at no CPU cost.

    def _password_fingerprint(self, user: User) -> str:
        key = self.reset_password_token_secret
        secret = key.get_secret_value() if hasattr(key, "get_secret_value") else str(key)
        return hmac.new(secret.encode(), user.hashed_password.encode(), hashlib.sha256).hexdigest()

    async def forgot_password(self, user: User, request: Request | None = None) -> None:
        if not user.is_active:
            raise exceptions.UserInactive()
        token = generate_jwt(
            {
                "sub": str(user.id),
                "password_fgpt": self._password_fingerprint(user),
                "aud": self.reset_password_token_audience,
            },
            self.reset_password_token_secret,
            self.reset_password_token_lifetime_seconds,
        )
        await self.on_after_forgot_password(user, token, request)

    async def reset_password(
        self, token: str, password: str, request: Request | None = None
    ) -> User:
        try:
            data = decode_jwt(
                token, self.reset_password_token_secret, [self.reset_password_token_audience]
            )
            user = await self.get(self.parse_id(data["sub"]))
            fingerprint = str(data["password_fgpt"])
        except (jwt.PyJWTError, KeyError, exceptions.InvalidID, exceptions.UserNotExists) as exc:
            raise exceptions.InvalidResetPasswordToken() from exc
        if not hmac.compare_digest(fingerprint, self._password_fingerprint(user)):
            raise exceptions.InvalidResetPasswordToken()
        if not user.is_active:
            raise exceptions.UserInactive()
        updated = await self._update(user, {"password": password})
        await self.on_after_reset_password(user, request)
        return updated

    # --- hooks -------------------------------------------------------------------------------

    async def _notify(self, user: User, purpose: Purpose, token: str) -> None:
        link = build_link(self.public_url, purpose, token)
        await self.notifier.send(TokenMessage(user.email, purpose, token, link))

    async def on_after_register(self, user: User, request: Request | None = None) -> None:
        log.info("user registered", extra={"user_id": str(user.id)})

    async def on_after_request_verify(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await self._notify(user, "verify", token)

    async def on_after_forgot_password(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await self._notify(user, "reset-password", token)
