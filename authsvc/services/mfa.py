"""Second factors (issue 14): TOTP enrolment, recovery codes, and checking a code.

A factor is pending from ``start`` until a first code confirms it; only a confirmed one asks
for a code at sign-in. Confirming hands out ten recovery codes, shown once; each works once.

``verify`` is the one check of a code, at sign-in and for the account's own changes: six
digits are a TOTP code (±1 step, never a step already spent: a conditional UPDATE moves
``last_step``, so one code used twice at once passes once), a recovery-code shape is a
recovery code (spent by ``UPDATE .. WHERE used_at IS NULL``), anything else is 400
``MFA_CODE_INVALID`` before anything is read or written. Consecutive failures are counted on
the factor; from the fifth on, the next code waits on the sign-in throttle's doubling curve
(``services.throttle.ThrottleRules``: 1 s, 2 s, 4 s ... its maximum) and is answered 429
``MFA_THROTTLED`` with Retry-After until then. A success ends the run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.authz.engine import Principal
from authsvc.config import Settings
from authsvc.db.models import User, utcnow
from authsvc.db.repositories import mfa as repo
from authsvc.errors import BadRequest, Conflict, NotFound, RateLimited
from authsvc.security import recovery_codes, totp
from authsvc.security.mfa_tokens import MfaTokenCodec
from authsvc.security.recovery_codes import RecoveryHasher
from authsvc.security.secretbox import Keys, SecretBox, SecretUnreadable
from authsvc.services.audit import (
    MFA_ENABLED,
    MFA_ENROLL_STARTED,
    MFA_FAILED,
    MFA_REMOVED,
    RECOVERY_CODE_USED,
    RECOVERY_CODES_REGENERATED,
    AuditService,
)
from authsvc.services.throttle import ThrottleRules

Kind = Literal["otp", "recovery"]
FAILURES_BEFORE_DELAY = 5
MAX_CODE_LENGTH = 64
_SIX_DIGITS = re.compile(r"[0-9]{6}")
_SPACES = re.compile(r"\s+")


class CodeInvalid(BadRequest):
    default_code = "MFA_CODE_INVALID"


class CodeRejected(BadRequest):
    default_code = "MFA_CODE_REJECTED"


class MfaThrottled(RateLimited):
    default_code = "MFA_THROTTLED"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many wrong codes; try again in {retry_after} s.",
            retry_after=retry_after,
            rule="mfa-throttle",
        )


def _rejected() -> CodeRejected:
    return CodeRejected("The code is not valid (wrong, expired or already used).")


class MfaKit:
    """The long-lived parts, built once in ``main``: keys, codecs, the curve, the clock."""

    def __init__(self, settings: Settings, token_secret: str) -> None:
        kek = settings.key_encryption_key
        keys = Keys.from_secrets(kek.get_secret_value() if kek else None, token_secret)
        self.box = SecretBox(keys)
        self.recovery = RecoveryHasher(keys)
        self.tokens = MfaTokenCodec(token_secret)
        self.issuer = settings.totp_issuer
        self.token_lifetime = timedelta(seconds=settings.mfa_token_lifetime_seconds)
        self.curve = dataclasses.replace(
            ThrottleRules.from_settings(settings), threshold=FAILURES_BEFORE_DELAY
        )
        # Time for codes and holds (tests drive it instead of sleeping).
        self.clock: Callable[[], datetime] = utcnow


def classify(code: str | None) -> tuple[Kind, str]:
    """What a presented code is, normalized; 400 for anything that is neither."""
    if not code or len(code) > MAX_CODE_LENGTH:
        raise CodeInvalid("The code is missing or too long (at most 64 characters).")
    compact = _SPACES.sub("", code)
    if _SIX_DIGITS.fullmatch(compact):
        return "otp", compact
    plain = recovery_codes.normalize(code)
    if plain is not None:
        return "recovery", plain
    raise CodeInvalid(
        "The code must be the 6 digits of the authenticator app or a recovery code "
        "(xxxx-xxxx-xxxx-xxxx)."
    )


@dataclass(frozen=True)
class Enrolment:
    secret: str
    otpauth_uri: str
    qr_svg: str


@dataclass(frozen=True)
class Status:
    totp: Literal["none", "pending", "enabled"]
    confirmed_at: datetime | None
    recovery_codes_remaining: int


class MfaService:
    """The rules on one request's database session; commits what it changes."""

    def __init__(
        self,
        db: AsyncSession,
        kit: MfaKit,
        actor: Principal | None = None,
        client_ip: str | None = None,
    ) -> None:
        self.db = db
        self.kit = kit
        self.audit = AuditService(db, actor, client_ip)

    async def status(self, user_id: uuid.UUID) -> Status:
        state = await repo.factor(self.db, user_id)
        if state is None:
            return Status("none", None, 0)
        if state.confirmed_at is None:
            return Status("pending", None, 0)
        return Status("enabled", state.confirmed_at, await repo.codes_left(self.db, user_id))

    async def start(self, user: User) -> Enrolment:
        secret = totp.new_secret()
        now = self.kit.clock()
        if not await repo.start(self.db, user.id, self.kit.box.seal(secret, user.id.bytes), now):
            raise Conflict(
                "A second factor is enabled already; remove it first to enrol a new one.",
                code="MFA_ALREADY_ENROLLED",
            )
        self._record(MFA_ENROLL_STARTED, user.id, {"factor": "totp"})
        await self.db.commit()
        uri = totp.provisioning_uri(secret, user.email, self.kit.issuer)
        return Enrolment(secret, uri, totp.qr_svg(uri))

    async def confirm(self, user: User, code: str) -> list[str]:
        kind, value = classify(code)
        if kind != "otp":
            raise _app_code_needed()
        state = await repo.factor(self.db, user.id)
        if state is None or state.confirmed_at is not None:
            raise _not_pending()
        now = self.kit.clock()
        await self._admit(user.id, state, now)
        step = totp.matching_step(self._secret(state, user.id), value, now)
        if step is None:
            await self._failed(user.id, "otp", "wrong_code", now)
        if not await repo.confirm(self.db, user.id, step, now):
            raise _not_pending()  # confirmed in parallel
        codes = await self._new_codes(user.id, now)
        self._record(MFA_ENABLED, user.id, {"factor": "totp", "recovery_codes": len(codes)})
        await self.db.commit()
        return codes

    async def regenerate(self, user: User, code: str) -> list[str]:
        await self.verify(user.id, code, allow_recovery=False)
        codes = await self._new_codes(user.id, self.kit.clock())
        self._record(RECOVERY_CODES_REGENERATED, user.id, {"recovery_codes": len(codes)})
        await self.db.commit()
        return codes

    async def remove(
        self, user: User, *, code: str | None, recovery_code: str | None, password_ok: bool
    ) -> None:
        """With a current code, or with the password (checked by the caller) and a recovery
        code. A pending factor, which protects nothing yet, goes without either."""
        state = await repo.factor(self.db, user.id)
        if state is None:
            raise NotFound("No second factor is enrolled.", code="MFA_NOT_ENROLLED")
        if state.confirmed_at is not None:
            if code is not None:
                await self.verify(user.id, code, allow_recovery=False)
            else:
                if recovery_code is None or classify(recovery_code)[0] != "recovery":
                    raise CodeInvalid("Send `code`, or `password` and `recovery_code`.")
                if not password_ok:
                    await self._failed(user.id, "recovery", "wrong_password", self.kit.clock())
                await self.verify(user.id, recovery_code)
        await repo.remove(self.db, user.id)
        self._record(MFA_REMOVED, user.id, {"factor": "totp", "was": _state_name(state)})
        await self.db.commit()

    async def verify(self, user_id: uuid.UUID, code: str, *, allow_recovery: bool = True) -> Kind:
        """Check a code of the account's confirmed factor. A success is left uncommitted (it
        commits with what it allows); a failure is counted, recorded and committed."""
        kind, value = classify(code)
        if kind == "recovery" and not allow_recovery:
            raise _app_code_needed()
        state = await repo.factor(self.db, user_id)
        if state is None or state.confirmed_at is None:
            raise Conflict("No second factor is enabled.", code="MFA_NOT_ENABLED")
        now = self.kit.clock()
        await self._admit(user_id, state, now)
        if kind == "otp":
            step = totp.matching_step(self._secret(state, user_id), value, now)
            if step is None:
                await self._failed(user_id, kind, "wrong_code", now)
            # RFC 6238 §5.2: a code is accepted once; this UPDATE also beats a parallel use.
            if not await repo.accept_step(self.db, user_id, step):
                await self._failed(user_id, kind, "replay", now)
            return kind
        if not await repo.spend_code(self.db, user_id, self.kit.recovery.candidates(value), now):
            await self._failed(user_id, kind, "wrong_code", now)
        await repo.succeeded(self.db, user_id)
        self._record(RECOVERY_CODE_USED, user_id, None)
        return kind

    # --- parts ---------------------------------------------------------------------------------

    def _secret(self, state: repo.FactorState, user_id: uuid.UUID) -> str:
        try:
            return self.kit.box.open(state.secret, user_id.bytes)
        except SecretUnreadable as exc:
            # The root key changed since enrolment (see security.secretbox): no code can pass.
            raise Conflict(
                "This second factor cannot be read with the current keys; ask an "
                "administrator to reset it.",
                code="MFA_FACTOR_UNREADABLE",
            ) from exc

    async def _new_codes(self, user_id: uuid.UUID, now: datetime) -> list[str]:
        codes = recovery_codes.new_set()
        hashes = [self.kit.recovery.hash(code) for code in codes]
        await repo.replace_codes(self.db, user_id, hashes, now)
        return codes

    async def _admit(self, user_id: uuid.UUID, state: repo.FactorState, now: datetime) -> None:
        delay = self.kit.curve.account_delay(state.failures)
        if delay is None:
            return
        if state.blocked_until is not None and state.blocked_until > now:
            raise MfaThrottled(_seconds(state.blocked_until - now))
        # Parallel codes that all saw the hold pass: one claims the attempt, the others wait.
        if not await repo.claim(self.db, user_id, now, now + delay):
            raise MfaThrottled(_seconds(delay))
        await self.db.commit()

    async def _failed(self, user_id: uuid.UUID, kind: Kind, reason: str, now: datetime) -> NoReturn:
        failures = await repo.add_failure(self.db, user_id)
        delay = self.kit.curve.account_delay(failures)
        if delay is not None:
            await repo.hold(self.db, user_id, now + delay)
        self._record(MFA_FAILED, user_id, {"reason": reason, "kind": kind, "failures": failures})
        await self.db.commit()  # the failure sticks although the request fails
        raise _rejected()

    def _record(self, action: str, user_id: uuid.UUID, after: dict[str, object] | None) -> None:
        self.audit.record(action, "user", str(user_id), None, after)


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def _state_name(state: repo.FactorState) -> str:
    return "pending" if state.confirmed_at is None else "enabled"


def _app_code_needed() -> CodeInvalid:
    return CodeInvalid("A current code from the authenticator app is needed here.")


def _not_pending() -> Conflict:
    return Conflict(
        "There is no enrolment waiting for its first code: start one (POST /users/me/mfa/totp).",
        code="MFA_NOT_PENDING",
    )
