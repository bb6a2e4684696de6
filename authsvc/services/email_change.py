"""Changing an account's email address: pending until the new address confirms, undoable from
the old one.

An email change is where a stolen access token would turn into a stolen account (change the
address, then reset the password through it). So:

* The owner's change (``PATCH /users/me``, with the current password) only records the address
  as ``pending_email`` and mails it a confirmation token (audience ``authsvc:confirm-email``),
  bound to the account, the pending address and the moment of the request: a newer request
  replaces the pending one and its link dies. ``email`` does not change.
* Confirming (``POST /auth/confirm-email``) moves the account to the address, verified (the
  link reached it), ends the account's other sessions (the requesting one stays), and tells the
  old address, with a token that undoes the move (``revert``).
* An administrator's change is immediate (an admin moves an account): the new address is
  unverified and gets a verification token, other sessions end, the old address gets a notice
  with no way back (the old mailbox may be exactly what the administrator moves away from).

Each step is audited in the same transaction as the change it describes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt
from fastapi_users import exceptions
from fastapi_users.db import BaseUserDatabase
from fastapi_users.jwt import decode_jwt, generate_jwt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.db.models import User
from authsvc.db.repositories import sessions as sessions_repo
from authsvc.db.repositories import users as users_repo
from authsvc.errors import BadRequest, Conflict
from authsvc.notify.base import Notifier, TokenMessage, build_link
from authsvc.services import audit
from authsvc.services.audit import AuditService

# One audience per token purpose: neither passes as a verify, reset or access token.
CONFIRM_EMAIL_AUDIENCE = "authsvc:confirm-email"
REVERT_EMAIL_AUDIENCE = "authsvc:revert-email"
# Long enough for someone to notice the notice; it can only give the old address its account back.
REVERT_EMAIL_LIFETIME_SECONDS = 3 * 24 * 3600

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _bad_confirm_token() -> BadRequest:
    return BadRequest(
        "The token is invalid, expired, already used, or replaced by a newer change request.",
        code="CONFIRM_EMAIL_BAD_TOKEN",
    )


def _bad_revert_token() -> BadRequest:
    return BadRequest(
        "The token is invalid, expired or already used.", code="REVERT_EMAIL_BAD_TOKEN"
    )


def _micros(moment: datetime) -> int:
    """A request's moment as an integer, so the token compares it exactly (no float, no text)."""
    return (moment - _EPOCH) // _MICROSECOND


@dataclass(frozen=True)
class Actor:
    """Who asked for a change, and the session their access token belongs to."""

    principal: Principal
    session_id: uuid.UUID | None


@dataclass(frozen=True)
class EmailChange:
    event_id: uuid.UUID  # the audit event of the change: a revert token is bound to it
    old: str
    new: str


class UserManagerParts(Protocol):
    """What the flows use of ``authsvc.services.users.UserManager`` (which uses them)."""

    session: AsyncSession
    user_db: BaseUserDatabase[User, uuid.UUID]
    notifier: Notifier
    public_url: str | None
    client_ip: str | None
    verification_token_secret: Any
    verification_token_lifetime_seconds: int

    def parse_id(self, value: Any) -> uuid.UUID: ...

    async def request_verify(self, user: User, request: Any = None) -> None: ...


class EmailChanges:
    """The email-change flows, on the user manager's session, notifier and token secret."""

    def __init__(self, manager: UserManagerParts) -> None:
        self.manager = manager
        self.db = manager.session

    def _audit(self, actor: Principal) -> AuditService:
        return AuditService(self.db, actor, self.manager.client_ip)

    def _secret(self) -> str:
        return str(self.manager.verification_token_secret)

    # --- the owner's change: pending, then confirmed -----------------------------------------

    async def request(self, user: User, new_email: str, actor: Actor) -> None:
        """Record ``new_email`` as pending (replacing any earlier request) and mail it a
        confirmation token; nothing else changes. The caller commits, then calls ``send``."""
        if await users_repo.email_taken(self.db, new_email, by_other_than=user.id):
            raise exceptions.UserAlreadyExists()
        before = {"email": user.email, "pending_email": user.pending_email}
        user.pending_email = new_email
        user.pending_email_at = datetime.now(UTC)
        self._audit(actor.principal).record(
            audit.EMAIL_CHANGE_REQUESTED,
            "user",
            str(user.id),
            before,
            {"email": user.email, "pending_email": new_email},
        )

    async def send_confirmation(self, user: User, actor: Actor) -> None:
        """After the commit: the confirmation token, to the pending address."""
        if user.pending_email is None or user.pending_email_at is None:
            return
        claims = {
            "sub": str(user.id),
            "email": user.pending_email,
            "at": _micros(user.pending_email_at),
            # The session that asked survives the move; the others end.
            "sid": str(actor.session_id) if actor.session_id else None,
            "aud": CONFIRM_EMAIL_AUDIENCE,
        }
        token = generate_jwt(
            claims, self._secret(), self.manager.verification_token_lifetime_seconds
        )
        link = build_link(self.manager.public_url, "confirm-email", token)
        await self.manager.notifier.send(
            TokenMessage(user.pending_email, "confirm-email", token, link)
        )

    async def confirm(self, token: str) -> User:
        """Move the account to its pending address with the token mailed there.

        400 ``CONFIRM_EMAIL_BAD_TOKEN`` for a bad, expired or used token, or one of a request
        a newer one replaced; 409 ``CONFIRM_EMAIL_ADDRESS_TAKEN`` when another account took the
        address meanwhile. A conditional update lets one of concurrent uses win.
        """
        try:
            data = decode_jwt(token, self._secret(), [CONFIRM_EMAIL_AUDIENCE])
            user_id = self.manager.parse_id(data["sub"])
            pending, at = str(data["email"]), int(data["at"])
            keep = uuid.UUID(str(data["sid"])) if data.get("sid") else None
        except (jwt.PyJWTError, KeyError, ValueError, TypeError, exceptions.InvalidID):
            raise _bad_confirm_token() from None
        user = await self.manager.user_db.get(user_id)
        if (
            user is None
            or not user.is_active
            or user.pending_email != pending
            or user.pending_email_at is None
            or _micros(user.pending_email_at) != at
        ):
            raise _bad_confirm_token()
        taken = Conflict(
            "Another account now uses this address; the change cannot be made.",
            code="CONFIRM_EMAIL_ADDRESS_TAKEN",
        )
        if await users_repo.email_taken(self.db, pending, by_other_than=user.id):
            raise taken
        old, requested_at = user.email, user.pending_email_at
        try:
            won = await users_repo.confirm_pending_email(
                self.db, user.id, current=old, pending=pending, requested_at=requested_at
            )
        except IntegrityError:
            await self.db.rollback()  # registered between the check and the update
            raise taken from None
        if not won:  # a concurrent use of the same token, or a newer request, came first
            await self.db.rollback()
            raise _bad_confirm_token()
        change = await self._end_other_sessions_and_audit(
            user.id, Actor(Principal(user_id=user.id, email=old), keep), old, pending
        )
        await self.db.commit()
        await self.db.refresh(user)
        await self._notify_old_address(user, change, offer_revert=True)
        return user

    # --- an administrator's change: immediate ------------------------------------------------

    async def record_immediate(self, user: User, new_email: str, actor: Actor) -> EmailChange:
        """End the account's other sessions and audit the change (committed with it by the
        caller); a pending request dies with the old address."""
        user.pending_email = None
        user.pending_email_at = None
        return await self._end_other_sessions_and_audit(user.id, actor, user.email, new_email)

    async def announce_immediate(self, user: User, change: EmailChange) -> None:
        """After the commit: a verification token to the new address, a notice to the old."""
        if user.is_active and not user.is_verified:
            await self.manager.request_verify(user)
        await self._notify_old_address(user, change, offer_revert=False)

    # --- shared ------------------------------------------------------------------------------

    async def _end_other_sessions_and_audit(
        self, user_id: uuid.UUID, actor: Actor, old: str, new: str
    ) -> EmailChange:
        keep = actor.session_id if actor.principal.user_id == user_id else None
        live = await sessions_repo.live_sessions(self.db, user_id)
        await sessions_repo.revoke(self.db, [s.id for s in live if s.id != keep], "email-changed")
        change = EmailChange(uuid.uuid4(), old, new)
        event = self._audit(actor.principal).record(
            audit.EMAIL_CHANGED, "user", str(user_id), {"email": old}, {"email": new}
        )
        event.id = change.event_id  # the revert token names it
        return change

    async def _notify_old_address(
        self, user: User, change: EmailChange, *, offer_revert: bool
    ) -> None:
        token = self._revert_token(user, change) if offer_revert else None
        link = build_link(self.manager.public_url, "email-changed", token) if token else None
        await self.manager.notifier.send(TokenMessage(change.old, "email-changed", token, link))

    # --- undo, from the old address ----------------------------------------------------------

    def _revert_token(self, user: User, change: EmailChange) -> str:
        return generate_jwt(
            {
                "sub": str(user.id),
                "old": change.old,
                "new": change.new,
                "chg": str(change.event_id),
                "aud": REVERT_EMAIL_AUDIENCE,
            },
            self._secret(),
            REVERT_EMAIL_LIFETIME_SECONDS,
        )

    async def revert(self, token: str) -> User:
        """Undo a confirmed change with the token sent to the old address: the old address
        comes back (verified: the token reached it), a pending request dies, every session
        ends.

        The token is bound to its change: it works only while the account still has the
        address it was changed to and that change is the latest (its audit event), and a
        conditional update lets exactly one of concurrent uses win.
        """
        try:
            data = decode_jwt(token, self._secret(), [REVERT_EMAIL_AUDIENCE])
            user_id = self.manager.parse_id(data["sub"])
            old, new = str(data["old"]), str(data["new"])
            change_id = uuid.UUID(str(data["chg"]))
        except (jwt.PyJWTError, KeyError, ValueError, exceptions.InvalidID):
            raise _bad_revert_token() from None
        user = await self.manager.user_db.get(user_id)
        if user is None or user.email != new:
            raise _bad_revert_token()
        latest = await users_repo.latest_email_change(self.db, user.id, audit.EMAIL_CHANGED)
        if latest != change_id:
            raise _bad_revert_token()
        taken = Conflict(
            "Another account now uses the old address; it cannot be restored.",
            code="REVERT_EMAIL_ADDRESS_TAKEN",
        )
        if await users_repo.email_taken(self.db, old, by_other_than=user.id):
            raise taken
        try:
            won = await users_repo.replace_email(self.db, user.id, new, old, verified=True)
        except IntegrityError:
            await self.db.rollback()  # registered between the check and the update
            raise taken from None
        if not won:  # a concurrent use of the same token came first
            await self.db.rollback()
            raise _bad_revert_token()
        await sessions_repo.revoke_all(self.db, user.id, "email-reverted")
        self._audit(Principal(user_id=user.id, email=old)).record(
            audit.EMAIL_REVERTED,
            "user",
            str(user.id),
            {"email": new},
            {"email": old, "reverted_change": str(change_id)},
        )
        await self.db.commit()
        await self.db.refresh(user)
        return user
