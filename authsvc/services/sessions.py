"""Login sessions and rotating refresh tokens (RFC 9700 §4.14, OWASP ASVS 10.4.5).

A refresh token is 256 random bits, shown once and stored only as its SHA-256. Each use spends
it and returns a new one in the same session. Presenting a spent token again means it leaked
(or a client replayed it): the whole session is revoked, unless the replay comes within a
short grace window of the first use (two tabs refreshing at once), which gets a new token too.

Each replay honoured in the window starts a chain of its own, so the window is also bounded
in count: at most ``reuse_grace_max`` replays per token (``AUTHSVC_REFRESH_REUSE_GRACE_MAX``),
counted by one conditional UPDATE, ``reuse_count < max``, that the database applies to
concurrent replays one after another, so twenty at once still get exactly ``max``; and at most
``1 + reuse_grace_max`` live (unspent) tokens per session, checked under a lock on the session
row, since replaying the tokens a replay minted would otherwise multiply them round after
round. A replay past either bound is refused (``REFRESH_TOKEN_REUSE_LIMIT``) but ends
nothing: a careful thief stays within any bound, so ending the session there would catch only
clumsy ones while signing out the owner whose many tabs refreshed at once; the bounds are what
stop the multiplication, and a replay after the window still revokes the whole session.

``start`` and ``rotate`` leave their writes uncommitted on success: the token issuer commits
them with the access token signed (``services.issuer``), so a failure before the answer
leaves no session nobody received and spends no token. Their refusals that revoke commit
here: a revocation must stick although the request fails.

The security trail (``services.audit``): a late replay and a replay past the bound are alarms
(``REFRESH_REUSED``, reason ``reused`` or ``reuse_limit``), committed before the grant answers
its error; an honoured replay and a plain rotation record nothing (the refresh grant's
statement budget stays). A sign-out (``LOGOUT``) and a user ending one of their sessions
(``SESSION_REVOKED``) commit with the revocation they describe, and only when it ended
something.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.db.models import RefreshToken, Session, User, utcnow
from authsvc.db.repositories import sessions as repo
from authsvc.errors import NotFound, OAuthError
from authsvc.services.audit import LOGOUT, REFRESH_REUSED, SESSION_REVOKED, AuditService


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: int
    lifetime_seconds: int
    reuse_grace_seconds: int
    # Replays of one spent token honoured inside the window (each one a new chain).
    reuse_grace_max: int = 2


@dataclass(frozen=True)
class Refreshed:
    user: User
    session: Session
    refresh_token: str


def _invalid(message: str, code: str) -> OAuthError:
    return OAuthError("invalid_grant", message, code=code)


class SessionService:
    def __init__(
        self, db: AsyncSession, policy: SessionPolicy, client_ip: str | None = None
    ) -> None:
        """``client_ip`` goes into the audit events this service records."""
        self.db = db
        self.policy = policy
        self.client_ip = client_ip

    async def start(
        self,
        user: User,
        client_ip: str | None,
        user_agent: str | None,
        *,
        amr: tuple[str, ...] = ("pwd",),
    ) -> tuple[Session, str]:
        """A new session for a user who just authenticated by ``amr`` (RFC 8176 values)."""
        now = utcnow()
        session = Session(
            user_id=user.id,
            amr=" ".join(amr),
            auth_time=now,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self.policy.lifetime_seconds),
            client_ip=client_ip,
            user_agent=(user_agent or "")[:256] or None,
        )
        self.db.add(session)
        await self.db.flush()
        token = await self._mint(session)
        return session, token  # uncommitted: see the module docstring

    async def rotate(self, presented: str) -> Refreshed:
        stored = await repo.by_token_hash(self.db, hash_refresh_token(presented))
        if stored is None:
            raise _invalid("The refresh token is not valid.", "REFRESH_TOKEN_INVALID")
        session = await self.db.get(Session, stored.session_id)
        user = await self.db.get(User, session.user_id) if session else None
        now = utcnow()
        if session is None or user is None or not repo.is_live(session, now):
            raise _invalid("The session has ended; sign in again.", "SESSION_ENDED")
        if now - session.last_used_at > timedelta(seconds=self.policy.idle_seconds):
            await repo.revoke(self.db, [session.id], "idle")
            await self.db.commit()
            raise _invalid("The session has ended; sign in again.", "SESSION_ENDED")
        if not user.is_active:
            raise _invalid("The session has ended; sign in again.", "SESSION_ENDED")
        # One refresh of a session at a time, the session row locked first: replays count the
        # session's live tokens, and every refresh takes its locks in the same order (session,
        # then token), so concurrent ones wait instead of deadlocking.
        await repo.lock_session(self.db, session.id)
        if not await repo.claim(self.db, stored, now):
            await self._replay(stored, session, now)
        session.last_used_at = now
        token = await self._mint(session)
        return Refreshed(user, session, token)  # uncommitted: see the module docstring

    async def _replay(self, stored: RefreshToken, session: Session, now: datetime) -> None:
        """A spent token again: honoured inside the grace window up to the bound, refused past
        the bound, and taken as theft (the session ends) after the window."""
        window_start = now - timedelta(seconds=self.policy.reuse_grace_seconds)
        # Each honoured replay adds a live token to the session; replaying those in turn would
        # multiply them without end. So (the session is locked) a replay is honoured only while
        # the session holds fewer than 1 + max live tokens.
        room = await repo.live_token_count(self.db, session.id) < 1 + self.policy.reuse_grace_max
        if room and await repo.claim_replay(
            self.db, stored, window_start, self.policy.reuse_grace_max
        ):
            return
        await self.db.refresh(stored)
        session_id, user_id = session.id, session.user_id  # the rollback expires the rows
        if stored.used_at is not None and stored.used_at >= window_start:
            # Nothing of this refresh stays (the lock goes with it); the alarm alone commits.
            await self.db.rollback()
            self._alarm(session_id, user_id, "reuse_limit")
            await self.db.commit()
            raise _invalid(
                "This refresh token was already used by other requests; use the newest one.",
                "REFRESH_TOKEN_REUSE_LIMIT",
            )
        # A spent token came back late: assume it was stolen and end the whole family.
        await repo.revoke(self.db, [session_id], "reuse")
        self._alarm(session_id, user_id, "reused")
        await self.db.commit()
        raise _invalid(
            "This refresh token was already used; the session is revoked.",
            "REFRESH_TOKEN_REUSED",
        )

    def _alarm(self, session_id: uuid.UUID, user_id: uuid.UUID, reason: str) -> None:
        # No actor: whoever presents a spent token is not known to be the session's user.
        after = {"session_id": str(session_id), "reason": reason}
        self._audit(None).record(REFRESH_REUSED, "user", str(user_id), None, after)

    def _audit(self, actor: Principal | None) -> AuditService:
        return AuditService(self.db, actor, self.client_ip)

    async def _mint(self, session: Session) -> str:
        token = secrets.token_urlsafe(32)  # 256 bits
        self.db.add(RefreshToken(session_id=session.id, token_hash=hash_refresh_token(token)))
        await self.db.flush()
        return token

    async def end(self, session_id: uuid.UUID, reason: str) -> bool:
        ended = await repo.revoke(self.db, [session_id], reason)
        await self.db.commit()
        return ended > 0

    async def end_all(self, user_id: uuid.UUID, reason: str) -> int:
        ended = await repo.revoke_all(self.db, user_id, reason)
        await self.db.commit()
        return ended

    async def logout(self, user: Principal) -> None:
        """End the session ``user``'s token belongs to (``LOGOUT``, scope ``this``)."""
        if user.session_id is None or user.user_id is None:
            return
        if await repo.revoke(self.db, [user.session_id], "logout"):
            after = {"session_id": str(user.session_id), "scope": "this"}
            self._audit(user).record(LOGOUT, "user", str(user.user_id), None, after)
        await self.db.commit()

    async def logout_all(self, user: Principal) -> int:
        """End every session of ``user`` (``LOGOUT``, scope ``all``, with how many ended)."""
        assert user.user_id is not None
        ended = await repo.revoke_all(self.db, user.user_id, "logout-all")
        if ended:
            session_id = str(user.session_id) if user.session_id else None
            after = {"session_id": session_id, "scope": "all", "ended": ended}
            self._audit(user).record(LOGOUT, "user", str(user.user_id), None, after)
        await self.db.commit()
        return ended

    async def live(self, user_id: uuid.UUID) -> list[Session]:
        """The user's sessions not ended nor expired, most recently used first."""
        return await repo.live_sessions(self.db, user_id)

    async def end_own(self, user: Principal, session_id: uuid.UUID) -> None:
        """End one of the user's live sessions (``SESSION_REVOKED``, scope ``one``); 404
        ``SESSION_NOT_FOUND`` for any other (another user's session looks exactly like one
        that does not exist)."""
        found = await repo.get(self.db, session_id)
        if found is None or found.user_id != user.user_id or found.revoked_at is not None:
            raise NotFound("No such session.", code="SESSION_NOT_FOUND")
        if await repo.revoke(self.db, [session_id], "user"):
            after = {"session_id": str(session_id), "scope": "one"}
            self._audit(user).record(SESSION_REVOKED, "user", str(found.user_id), None, after)
        await self.db.commit()
