"""Sign-in throttling per account identifier and per trusted device (issue 13).

Guessing one account's password from many addresses is slowed by the account, not by the
address: after ``threshold`` consecutive failures the next attempt is not evaluated before
``last failure + min(base * 2^(n - threshold), max)`` (1 s, 2 s, 4 s ... 15 min by default),
and after ``max_failures`` (NIST SP 800-63B-4 §3.2.2: at most 100) no password is evaluated
from an untrusted device until a password reset, an administrator's unlock, or a sign-in from a
trusted device. An attempt held back costs no hash and answers 429 with Retry-After.

The key is ``normalize_email`` of the submitted username whether or not an account has it, so
an unknown address is throttled exactly like a known one and the answers tell nobody which
addresses exist. A device token (``security.device_tokens``) that is genuine, unexpired, not
revoked and of this very account takes the attempt out of the account's throttle: it is judged
by the device's own failures on the same curve, starting at ``device_max_failures``. That is
what keeps an attack on an account from locking its owner out (OWASP "device cookies").
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.config import Settings
from authsvc.db.models import User
from authsvc.db.repositories import throttles as repo
from authsvc.db.repositories.throttles import DeviceState, ThrottleState
from authsvc.errors import AuthsvcError, OAuthError, RateLimited
from authsvc.security.device_tokens import DeviceTokenCodec
from authsvc.security.identifiers import normalize_email
from authsvc.services.audit import THROTTLE_CLEARED, AuditService

__all__ = [
    "Held",
    "LoginThrottled",
    "ThrottleRules",
    "ThrottleService",
    "ThrottleView",
    "account_key",
    "clear_account",
]

_KEY_COLUMN = 1024  # login_throttles.account_key
# 2^60 seconds is past any maximum delay; the cap keeps the float finite.
_MAX_EXPONENT = 60


def account_key(username: str) -> str:
    """The throttle key of a submitted username: its ``normalize_email``. NFKC can lengthen a
    string manifold; a key too long for the column is replaced by its digest (no account has
    such an address, and a throttle shared by such keys only throttles more)."""
    key = normalize_email(username)
    if len(key) <= _KEY_COLUMN:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


class LoginThrottled(OAuthError, RateLimited):
    """429 from the token endpoint: in the RFC 6749 §5.2 shape (an OAuth client reads
    ``error``), with Retry-After like every other 429 (RFC 6585 §4) and our ``detail.code``.
    ``invalid_grant``: the credentials were not accepted (here: not even evaluated)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int, code: str) -> None:
        # Both parents' constructors chain to super(); set their attributes directly instead.
        AuthsvcError.__init__(self, message, code=code)
        self.error = "invalid_grant"
        self.http_status = 429
        self.retry_after = retry_after
        self.rule = "login-throttle"


@dataclass(frozen=True)
class Held:
    """An attempt that is not evaluated now."""

    retry_after: int
    locked: bool = False

    def error(self) -> LoginThrottled:
        if self.locked:
            return LoginThrottled(
                "Too many failed sign-ins: sign-in is locked for this account. Reset the "
                "password, or ask an administrator to unlock it.",
                retry_after=self.retry_after,
                code="LOGIN_LOCKED",
            )
        return LoginThrottled(
            f"Too many failed sign-ins for this account; try again in {self.retry_after} s.",
            retry_after=self.retry_after,
            code="LOGIN_THROTTLED",
        )


@dataclass(frozen=True)
class ThrottleRules:
    threshold: int
    base_delay: float
    max_delay: float
    max_failures: int
    device_max_failures: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ThrottleRules:
        return cls(
            threshold=settings.login_throttle_threshold,
            base_delay=settings.login_throttle_base_delay_seconds,
            max_delay=settings.login_throttle_max_delay_seconds,
            max_failures=settings.login_max_consecutive_failures,
            device_max_failures=settings.device_max_failures,
        )

    def _delay(self, failures: int, start: int) -> timedelta | None:
        if failures < start:
            return None
        exponent = min(failures - start, _MAX_EXPONENT)
        return timedelta(seconds=min(self.base_delay * 2**exponent, self.max_delay))

    def account_delay(self, failures: int) -> timedelta | None:
        """How long after the last of ``failures`` consecutive failures the next attempt on
        the account waits (None: not at all)."""
        return self._delay(failures, self.threshold)

    def device_delay(self, failures: int) -> timedelta | None:
        return self._delay(failures, self.device_max_failures)

    def locked(self, failures: int) -> bool:
        return failures >= self.max_failures


def _seconds_until(instant: datetime, now: datetime) -> int:
    return max(1, math.ceil((instant - now).total_seconds()))


@dataclass(frozen=True)
class Failure:
    """What a counted failure did: the new count, and whether this one starts the episode's
    throttling (the owner is told once, by whoever crossed the threshold)."""

    failures: int
    started_throttling: bool


class ThrottleService:
    """The rules on one request's database session. Commits only where a claim must be seen
    by parallel requests at once; the grant commits the rest with its audit events."""

    def __init__(self, db: AsyncSession, rules: ThrottleRules) -> None:
        self.db = db
        self.rules = rules

    async def trusted_device(
        self, codec: DeviceTokenCodec, token: str | None, key: str, now: datetime
    ) -> DeviceState | None:
        """The device a presented token names, if it is to be trusted for this account now;
        otherwise None, whatever is wrong with it (the attempt is then judged as untrusted, and
        nobody is told why)."""
        claims = codec.read(token, now) if token else None
        if claims is None:
            return None
        device = await repo.device(self.db, claims.device_id)
        if (
            device is None
            or device.revoked_at is not None
            or device.user_id != claims.user_id
            or device.email_key != key
            # A device that failed this often is no longer worth more than any other.
            or self.rules.locked(device.failures)
        ):
            return None
        return device

    async def admit_account(self, key: str, now: datetime) -> tuple[Held | None, bool]:
        """May an untrusted attempt on ``key`` be evaluated now? (None, whether a throttle row
        exists) if so; the reason to hold it back otherwise."""
        state = await repo.get(self.db, key)
        if state is None:
            return None, False
        if self.rules.locked(state.failures):
            return Held(math.ceil(self.rules.max_delay), locked=True), True
        delay = self.rules.account_delay(state.failures)
        if delay is None:
            return None, True
        return await self._claim(state, delay, now, key=key), True

    async def admit_device(self, device: DeviceState, now: datetime) -> Held | None:
        delay = self.rules.device_delay(device.failures)
        if delay is None:
            return None
        if device.blocked_until is not None and device.blocked_until > now:
            return Held(_seconds_until(device.blocked_until, now))
        if not await repo.claim_device(self.db, device.id, now, now + delay):
            return Held(_seconds_until(now + delay, now))
        await self.db.commit()
        return None

    async def _claim(
        self, state: ThrottleState, delay: timedelta, now: datetime, *, key: str
    ) -> Held | None:
        if state.blocked_until is not None and state.blocked_until > now:
            return Held(_seconds_until(state.blocked_until, now))
        # Parallel guesses that all read an expired hold: one UPDATE wins, the others wait.
        # The claim holds the next attempt off for this step's delay (a failure then moves it
        # to the next step's; a success clears it) and commits at once, so that the others
        # see it while this one is being hashed.
        if not await repo.claim(self.db, key, now, now + delay, self.rules.max_failures):
            return Held(_seconds_until(now + delay, now))
        await self.db.commit()
        return None

    async def account_failed(self, key: str, now: datetime) -> Failure:
        state = await repo.add_failure(self.db, key, now)
        delay = self.rules.account_delay(state.failures)
        if delay is None:
            return Failure(state.failures, False)
        await repo.hold(self.db, key, now + delay)
        started = state.notified_at is None and await repo.mark_notified(self.db, key, now)
        return Failure(state.failures, started)

    async def device_failed(self, device: DeviceState, now: datetime) -> None:
        failures = await repo.add_device_failure(self.db, device.id)
        delay = self.rules.device_delay(failures)
        if delay is not None:
            await repo.hold_device(self.db, device.id, now + delay)

    async def signed_in(
        self, key: str, user_id: uuid.UUID, device: DeviceState | None, had_row: bool, now: datetime
    ) -> uuid.UUID:
        """A success: ends the account's episode, and trusts the device (a known one is reset,
        a new one is added). The device's id, for the token handed back."""
        if had_row or device is not None:
            await repo.clear(self.db, key)
        if device is not None:
            await repo.device_signed_in(self.db, device.id, now)
            return device.id
        await repo.keep_recent_devices(self.db, user_id, repo.MAX_DEVICES_PER_ACCOUNT - 1)
        return repo.add_device(self.db, user_id, now)


# --- outside the token endpoint ---------------------------------------------------------------


async def clear_account(db: AsyncSession, email: str) -> None:
    """A password reset ends the account's throttle (the caller commits)."""
    await repo.clear(db, account_key(email))


@dataclass(frozen=True)
class ThrottleView:
    failures: int
    last_failure_at: datetime | None
    blocked_until: datetime | None
    locked: bool
    notified_at: datetime | None

    def snapshot(self) -> dict[str, object]:
        return {
            "failures": self.failures,
            "last_failure_at": _iso(self.last_failure_at),
            "blocked_until": _iso(self.blocked_until),
            "locked": self.locked,
            "notified_at": _iso(self.notified_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def view(db: AsyncSession, rules: ThrottleRules, user: User) -> ThrottleView:
    """The throttle of the account's current address (zero failures when there is none)."""
    state = await repo.get(db, account_key(user.email))
    if state is None:
        return ThrottleView(0, None, None, False, None)
    return ThrottleView(
        state.failures,
        state.last_failure_at,
        state.blocked_until,
        rules.locked(state.failures),
        state.notified_at,
    )


async def unlock(
    db: AsyncSession, rules: ThrottleRules, actor: Principal, client_ip: str | None, user: User
) -> None:
    """An administrator ends the account's throttle; audited with the state it had."""
    before = await view(db, rules, user)
    await repo.clear(db, account_key(user.email))
    AuditService(db, actor, client_ip).record(
        THROTTLE_CLEARED, "user", str(user.id), before.snapshot(), None
    )
    await db.commit()
