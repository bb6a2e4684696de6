"""The user manager: fastapi-users' ``BaseUserManager`` with our hashing, policy and notifier.

fastapi-users hashes through a synchronous helper, which would run bcrypt on the event loop.
The methods that hash are therefore overridden to await ``PasswordHasher`` (worker threads,
capped); the helper handed to fastapi-users refuses to run on the event loop, so a path we
missed fails loudly in tests instead of silently blocking. Everything else is fastapi-users'.

An email change is where a stolen access token would turn into a stolen account (change the
address, then reset the password through it), so on the self-service routes it needs the
current password, and every change of address, by anyone: unverifies the new address and sends
it a verification token, ends the account's other sessions, tells the old address, and is
audited. A self-service change also hands the old address a token that undoes it
(``revert_email``); an administrator's change stands (the old mailbox may be exactly what the
administrator moves the account away from).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Request
from fastapi.security import OAuth2PasswordRequestForm
from fastapi_users import BaseUserManager, UUIDIDMixin, exceptions, schemas
from fastapi_users.db import BaseUserDatabase
from fastapi_users.jwt import decode_jwt, generate_jwt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.db.models import AuditEvent, User
from authsvc.db.repositories import roles as roles_repo
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.db.repositories import users as users_repo
from authsvc.errors import BadRequest, Conflict, InvalidInput, Unauthorized
from authsvc.notify.base import Notifier, Purpose, TokenMessage, build_link
from authsvc.security.password_policy import PasswordPolicy
from authsvc.security.passwords import PasswordHasher
from authsvc.services.callers import UserCaller

log = logging.getLogger("authsvc.users")

_SELF_READ_ONLY = ("is_active", "is_superuser", "is_verified", "attributes")

# One audience per token purpose: a revert token is neither a verify nor a reset token.
REVERT_EMAIL_AUDIENCE = "authsvc:revert-email"
# Long enough for someone to notice the notice; it can only give the old address its account back.
REVERT_EMAIL_LIFETIME_SECONDS = 3 * 24 * 3600


def _bad_revert_token() -> BadRequest:
    return BadRequest(
        "The token is invalid, expired or already used.", code="REVERT_EMAIL_BAD_TOKEN"
    )


@dataclass(frozen=True)
class _Caller:
    """Who asked for a change, and the session their access token belongs to."""

    user_id: uuid.UUID
    email: str | None
    session_id: uuid.UUID | None


@dataclass(frozen=True)
class _EmailChange:
    event_id: uuid.UUID  # the audit event of the change: a revert token is bound to it
    old: str
    new: str


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
        # No account has a second factor yet (MFA arrives with issue 14, which passes True).
        reason = await self.policy.validate(password, email=user.email, has_second_factor=False)
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
        password = update_dict.pop("password", None)
        if password is not None:
            await self.validate_password(password, user)
            update_dict["hashed_password"] = await self.hasher.hash(password)
            # A new password ends every session (committed with the change below).
            await sessions_repo.revoke_all(self.session, user.id, "password")
        if update_dict.get("is_active") is False and user.is_active:
            await sessions_repo.revoke_all(self.session, user.id, "deactivated")
        change: _EmailChange | None = None
        new_email = update_dict.get("email")
        if new_email is not None and new_email != user.email:
            if await self.user_db.get_by_email(new_email) is not None:
                raise exceptions.UserAlreadyExists()
            change = await self._record_email_change(user, str(new_email), request)
        try:
            # fastapi-users also sets is_verified=False with a new email; commits everything.
            updated = await super()._update(user, update_dict)
        except IntegrityError as exc:
            await self._rollback()
            raise exceptions.UserAlreadyExists() from exc
        if change is not None:
            await self._announce_email_change(updated, change, offer_revert=self_service)
        return updated

    # --- email changes ---------------------------------------------------------------------

    def _caller(self, user: User, request: Request | None) -> _Caller:
        # Who is calling, as the request's one resolver saw it (api.deps.get_caller).
        caller = getattr(request.state, "caller", None) if request is not None else None
        if isinstance(caller, UserCaller):
            principal = caller.principal
            return _Caller(caller.user.id, principal.email, principal.session_id)
        return _Caller(user.id, user.email, None)

    async def _record_email_change(
        self, user: User, new_email: str, request: Request | None
    ) -> _EmailChange:
        """End the account's other sessions and audit the change (committed with it)."""
        caller = self._caller(user, request)
        keep = caller.session_id if caller.user_id == user.id else None
        live = await sessions_repo.live_sessions(self.session, user.id)
        await sessions_repo.revoke(
            self.session, [s.id for s in live if s.id != keep], "email-changed"
        )
        change = _EmailChange(uuid.uuid4(), user.email, new_email)
        self.session.add(
            AuditEvent(
                id=change.event_id,
                actor_id=caller.user_id,
                actor_email=caller.email,
                action=users_repo.EMAIL_CHANGE_ACTION,
                target_type="user",
                target_id=str(user.id),
                before={"email": change.old},
                after={"email": change.new},
                client_ip=self.client_ip,
            )
        )
        return change

    async def _announce_email_change(
        self, user: User, change: _EmailChange, *, offer_revert: bool
    ) -> None:
        """After the commit: a verification token to the new address, a notice to the old."""
        if user.is_active and not user.is_verified:
            await self.request_verify(user)
        token = self._revert_token(user, change) if offer_revert else None
        link = build_link(self.public_url, "email-changed", token) if token else None
        await self.notifier.send(TokenMessage(change.old, "email-changed", token, link))

    def _revert_token(self, user: User, change: _EmailChange) -> str:
        return generate_jwt(
            {
                "sub": str(user.id),
                "old": change.old,
                "new": change.new,
                "chg": str(change.event_id),
                "aud": REVERT_EMAIL_AUDIENCE,
            },
            self.verification_token_secret,
            REVERT_EMAIL_LIFETIME_SECONDS,
        )

    async def revert_email(self, token: str) -> User:
        """Undo a self-service email change with the token sent to the old address: the old
        address comes back (verified: the token reached it) and every session ends.

        The token is bound to its change: it works only while the account still has the
        address it was changed to and that change is the latest (its audit event), and a
        conditional update lets exactly one of concurrent uses win.
        """
        try:
            data = decode_jwt(token, self.verification_token_secret, [REVERT_EMAIL_AUDIENCE])
            user_id = self.parse_id(data["sub"])
            old, new = str(data["old"]), str(data["new"])
            change_id = uuid.UUID(str(data["chg"]))
        except (jwt.PyJWTError, KeyError, ValueError, exceptions.InvalidID):
            raise _bad_revert_token() from None
        user = await self.user_db.get(user_id)
        if user is None or user.email != new:
            raise _bad_revert_token()
        if await users_repo.latest_email_change(self.session, user.id) != change_id:
            raise _bad_revert_token()
        taken = Conflict(
            "Another account now uses the old address; it cannot be restored.",
            code="REVERT_EMAIL_ADDRESS_TAKEN",
        )
        if await users_repo.email_taken(self.session, old, by_other_than=user.id):
            raise taken
        try:
            won = await users_repo.replace_email(self.session, user.id, new, old, verified=True)
        except IntegrityError:
            await self._rollback()  # registered between the check and the update
            raise taken from None
        if not won:  # a concurrent use of the same token came first
            await self._rollback()
            raise _bad_revert_token()
        await sessions_repo.revoke_all(self.session, user.id, "email-reverted")
        self.session.add(
            AuditEvent(
                actor_id=user.id,
                actor_email=old,
                action=users_repo.EMAIL_REVERT_ACTION,
                target_type="user",
                target_id=str(user.id),
                before={"email": new},
                after={"email": old, "reverted_change": str(change_id)},
                client_ip=self.client_ip,
            )
        )
        await self.session.commit()
        await self.session.refresh(user)
        return user

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

    async def on_after_request_verify(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await self._notify(user, "verify", token)

    async def on_after_forgot_password(
        self, user: User, token: str, request: Request | None = None
    ) -> None:
        await self._notify(user, "reset-password", token)
