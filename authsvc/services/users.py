"""The user manager: fastapi-users' ``BaseUserManager`` with our hashing, policy and notifier.

fastapi-users hashes through a synchronous helper, which would run bcrypt on the event loop.
The methods that hash are therefore overridden to await ``PasswordHasher`` (worker threads,
capped); the helper handed to fastapi-users refuses to run on the event loop, so a path we
missed fails loudly in tests instead of silently blocking. Everything else is fastapi-users'.

Registration mails the verification token itself. ``register_quietly`` (the default, with
``AUTHSVC_REQUIRE_VERIFIED_EMAIL``) answers alike for a new and a taken address after the same
expensive work (the policy check, one password hash, one lookup): the answer tells nobody
whether the address has an account; its owner is mailed instead.

Email changes (pending until the new address confirms, undoable from the old one) live in
``authsvc.services.email_change``; changing the password or the email on oneself needs the
current password, so a stolen access token is not enough for either.
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

from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.db.repositories import mfa as mfa_repo
from authsvc.db.repositories import roles as roles_repo
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.db.repositories import users as users_repo
from authsvc.errors import InvalidInput, Unauthorized
from authsvc.notify.base import Notifier, Purpose, TokenMessage, build_link
from authsvc.security.password_policy import PasswordPolicy
from authsvc.security.passwords import PasswordHasher
from authsvc.services import audit
from authsvc.services.audit import AuditService
from authsvc.services.callers import UserCaller
from authsvc.services.email_change import Actor, EmailChange, EmailChanges
from authsvc.services.throttle import clear_account as clear_login_throttle

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
        client_ip: str | None = None,
    ) -> None:
        super().__init__(user_db, password_helper=EventLoopHashGuard())
        self.hasher = hasher
        self.policy = policy
        self.notifier = notifier
        self.public_url = public_url
        self.session = session
        self.default_role = default_role
        self.client_ip = client_ip
        # The session of the access token the request came with, set by AccessTokenStrategy:
        # an email change keeps it and ends the account's other sessions.
        # Distinct audiences (set by fastapi-users) keep reset and verify tokens apart; both are
        # HS256 with this secret, so neither can ever pass as an RS256 access token.
        self.reset_password_token_secret = token_secret
        self.verification_token_secret = token_secret
        self.reset_password_token_lifetime_seconds = reset_lifetime
        self.verification_token_lifetime_seconds = verify_lifetime

    # --- passwords -------------------------------------------------------------------------

    async def validate_password(self, password: str, user: schemas.UC | User) -> None:
        # NIST SP 800-63B-4 §3.1.1.2: a shorter minimum once the password is not the only
        # factor (an account being created has none yet).
        second = isinstance(user, User) and await mfa_repo.confirmed(self.session, user.id)
        reason = await self.policy.validate(password, email=user.email, has_second_factor=second)
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
        """Today's registration (``require_verified_email`` off): a taken address is
        ``UserAlreadyExists`` — the answer reveals it."""
        await self.validate_password(user_create.password, user_create)
        if await self.user_db.get_by_email(user_create.email) is not None:
            raise exceptions.UserAlreadyExists()
        hashed = await self.hasher.hash(user_create.password)
        created = await self._insert(user_create, hashed, safe=safe)
        await self.on_after_register(created, request)
        return created

    async def register_quietly(
        self, user_create: schemas.UC, request: Request | None = None
    ) -> None:
        """Register without telling the caller whether the address was free.

        Both paths do the same expensive work in the same order: the policy check (a refused
        password is refused alike, before any lookup), one password hash (a taken address
        hashes and discards), the account's INSERT (refused by the unique index for a taken
        address), the default role's read, one audited write and its commit. A new address
        gets the account and the verification mail; a taken one a security event
        (``user.register.taken``) and its owner a "someone tried" mail. Both
        mails leave through the outbox, so neither waits on the mail server.
        """
        await self.validate_password(user_create.password, user_create)
        hashed = await self.hasher.hash(user_create.password)
        # Insert first, on both paths: the unique index on the address's key tells a taken
        # address (and settles a concurrent registration of the same one) after the same
        # statement a new address costs.
        try:
            created = await self._insert(user_create, hashed, safe=True)
        except exceptions.UserAlreadyExists:
            owner = await self.user_db.get_by_email(user_create.email)
        else:
            await self.on_after_register(created, request)
            return
        if owner is None:
            return  # deleted in between: nobody to tell
        await self._record_attempt(owner)
        if owner.is_active:
            link = build_link(self.public_url, "register-attempt", None)
            await self.notifier.send(TokenMessage(owner.email, "register-attempt", None, link))

    async def _record_attempt(self, owner: User) -> None:
        """A registration of an address in use is a security event of its owner's account.
        Writing it also gives this path a new account's database work — the default role
        read, a write with its audit chain, a commit — so its answer takes about as long
        (``bench/register_timing.py``)."""
        if self.default_role:
            await roles_repo.get_role(self.session, self.default_role)
        AuditService(self.session, None, self.client_ip).record(
            audit.REGISTER_ATTEMPTED, "user", str(owner.id), None, {"reason": "address_taken"}
        )
        await self.session.commit()

    async def _insert(self, user_create: schemas.UC, hashed: str, *, safe: bool) -> User:
        # fastapi-users leaves these two helpers unannotated.
        user_dict: dict[str, Any] = (
            user_create.create_update_dict()  # type: ignore[no-untyped-call]
            if safe
            else user_create.create_update_dict_superuser()  # type: ignore[no-untyped-call]
        )
        user_dict.pop("password")
        user_dict["hashed_password"] = hashed
        # The account, its default role and its audit event land in one transaction, or none.
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
        actor = Principal(user_id=created.id, email=created.email)
        AuditService(self.session, actor, self.client_ip).record(
            audit.USER_REGISTERED, "user", str(created.id), None, {"email": created.email}
        )
        await self.session.commit()
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
            changes_email = user_update.email is not None and user_update.email != user.email
            if user_update.password is not None or changes_email:
                # A stolen access token must not be enough to change either.
                if not current_password or not await self.hasher.verify(
                    current_password, user.hashed_password
                ):
                    raise Unauthorized(
                        "Changing the password or the email needs the correct current_password.",
                        code="CURRENT_PASSWORD_INVALID",
                    )
        # fastapi-users leaves these two helpers unannotated.
        update_dict: dict[str, Any] = (
            user_update.create_update_dict()  # type: ignore[no-untyped-call]
            if safe
            else user_update.create_update_dict_superuser()  # type: ignore[no-untyped-call]
        )
        updated = await self._apply(user, update_dict, self_service=safe, request=request)
        await self.on_after_update(updated, update_dict, request)
        return updated

    async def _update(self, user: User, update_dict: dict[str, Any]) -> User:
        # fastapi-users' own paths (verify) come here; ours go through update().
        if update_dict.get("is_verified") is True and not user.is_verified:
            actor = Principal(user_id=user.id, email=user.email)
            AuditService(self.session, actor, self.client_ip).record(
                audit.EMAIL_VERIFIED, "user", str(user.id), None, {"email": user.email}
            )
        return await self._apply(user, update_dict, self_service=False, request=None)

    async def _apply(
        self,
        user: User,
        update_dict: dict[str, Any],
        *,
        self_service: bool,
        request: Request | None,
    ) -> User:
        update_dict = dict(update_dict)
        update_dict.pop("current_password", None)
        actor = self._actor(user, request)
        password = update_dict.pop("password", None)
        if password is not None:
            await self.validate_password(password, user)
            update_dict["hashed_password"] = await self.hasher.hash(password)
            # A new password ends every session (committed with the change below), and a
            # pending email change: whoever asked for it may be who the password was changed
            # against (a change asked for in this same request is set again below).
            await sessions_repo.revoke_all(self.session, user.id, "password")
            update_dict["pending_email"] = None
            update_dict["pending_email_at"] = None
            AuditService(self.session, actor.principal, self.client_ip).record(
                audit.PASSWORD_CHANGED,
                "user",
                str(user.id),
                None,
                {"self_service": self_service},
            )
        if update_dict.get("is_active") is False and user.is_active:
            await sessions_repo.revoke_all(self.session, user.id, "deactivated")
        changes = EmailChanges(self)
        change, pending = await self._route_email(changes, user, update_dict, self_service, actor)
        try:
            # fastapi-users also sets is_verified=False with a new email; commits everything.
            updated = await super()._update(user, update_dict)
        except IntegrityError as exc:
            await self._rollback()
            raise exceptions.UserAlreadyExists() from exc
        if pending:
            await changes.send_confirmation(updated, actor)
        if change is not None:
            await changes.announce_immediate(updated, change)
        return updated

    async def _route_email(
        self,
        changes: EmailChanges,
        user: User,
        update_dict: dict[str, Any],
        self_service: bool,
        actor: Actor,
    ) -> tuple[EmailChange | None, bool]:
        """Take a new email out of ``update_dict`` when it must wait (the owner's change):
        the immediate change (an administrator's) to announce, and whether one is pending."""
        new_email = update_dict.get("email")
        if self_service and new_email is not None:
            # The owner's change waits for the new address to confirm; email stays.
            del update_dict["email"]
            if new_email != user.email:
                await changes.request(user, str(new_email), actor)
                return None, True
            if user.pending_email is not None:
                # Asking for the address one has: the pending request is withdrawn.
                user.pending_email, user.pending_email_at = None, None
            return None, False
        if new_email is not None and new_email != user.email:
            if await self.user_db.get_by_email(new_email) is not None:
                raise exceptions.UserAlreadyExists()
            return await changes.record_immediate(user, str(new_email), actor), False
        return None, False

    def _actor(self, user: User, request: Request | None) -> Actor:
        """Who is calling, as the request's one resolver saw it (api.deps.get_caller); the
        user themself when there is no request (fastapi-users' own paths)."""
        caller = getattr(request.state, "caller", None) if request is not None else None
        if isinstance(caller, UserCaller):
            return Actor(caller.principal, caller.principal.session_id)
        return Actor(Principal(user_id=user.id, email=user.email), None)

    # --- email changes (authsvc.services.email_change) ---------------------------------------

    async def confirm_email(self, token: str) -> User:
        return await EmailChanges(self).confirm(token)

    async def revert_email(self, token: str) -> User:
        return await EmailChanges(self).revert(token)

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
        await self.validate_password(password, user)
        new_hash = await self.hasher.hash(password)
        # Single use under concurrency: the write succeeds only if the hash the token is bound
        # to is still the stored one, so of concurrent uses exactly one wins.
        if not await users_repo.replace_password_hash(
            self.session, user.id, user.hashed_password, new_hash
        ):
            await self._rollback()
            raise exceptions.InvalidResetPasswordToken()
        await sessions_repo.revoke_all(self.session, user.id, "password")
        actor = Principal(user_id=user.id, email=user.email)  # the reset token's holder
        AuditService(self.session, actor, self.client_ip).record(
            audit.PASSWORD_RESET, "user", str(user.id), None, None
        )
        await clear_login_throttle(self.session, user.email)
        await self.session.commit()
        await self.session.refresh(user)
        await self.on_after_reset_password(user, request)
        return user

    # --- hooks -------------------------------------------------------------------------------

    async def _notify(self, user: User, purpose: Purpose, token: str) -> None:
        link = build_link(self.public_url, purpose, token)
        await self.notifier.send(TokenMessage(user.email, purpose, token, link))

    async def on_after_register(self, user: User, request: Request | None = None) -> None:
        log.info("user registered", extra={"user_id": str(user.id)})
        if user.is_active and not user.is_verified:
            await self.request_verify(user, request)  # the verification mail, via the outbox

    async def on_after_request_verify(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await self._notify(user, "verify", token)

    async def on_after_forgot_password(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await self._notify(user, "reset-password", token)
