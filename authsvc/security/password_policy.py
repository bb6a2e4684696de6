"""Password policy per NIST SP 800-63B-4 §3.1.1.2.

- Length: at least 15 characters when the password is the only factor, 8 once the account has
  a second factor; at least 64 accepted; no composition rules.
- A blocklist of breached and common passwords, held compactly (``blocklist.py``), read once.
- Optionally an online check against a Pwned-Passwords-style range API (``breached.py``),
  which fails open.

``check()`` is the offline part (pure, synchronous); ``validate()`` adds the online check.
Both answer ``None`` for an acceptable password, else a reason a user can act on.
"""

from __future__ import annotations

import unicodedata

from authsvc.config import Settings
from authsvc.security.blocklist import Blocklist, load_blocklist
from authsvc.security.breached import BreachedPasswordChecker

# SP 800-63B-4 §3.1.1.2: verifiers SHOULD permit a maximum length of at least 64 characters.
MIN_ACCEPTED_MAX_LENGTH = 64

LISTED = "This password is too common or has appeared in a data breach; choose another."
BREACHED = "This password has appeared in a data breach; choose another."


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class PasswordPolicy:
    def __init__(
        self,
        *,
        min_length: int,
        max_length: int,
        min_length_with_mfa: int | None = None,
        blocklist: Blocklist | None = None,
        breached: BreachedPasswordChecker | None = None,
    ) -> None:
        with_mfa = min_length if min_length_with_mfa is None else min_length_with_mfa
        if min(min_length, with_mfa) < 1:
            raise ValueError("minimum lengths must be at least 1")
        if max_length < max(min_length, with_mfa, MIN_ACCEPTED_MAX_LENGTH):
            raise ValueError(
                f"max_length must be at least {MIN_ACCEPTED_MAX_LENGTH} and at least the minimums"
            )
        self.min_length = min_length
        self.min_length_with_mfa = with_mfa
        self.max_length = max_length
        self._blocklist = blocklist
        self._breached = breached

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordPolicy:
        url = settings.breached_passwords_api_url
        return cls(
            min_length=settings.password_min_length,
            min_length_with_mfa=settings.password_min_length_with_mfa,
            max_length=settings.password_max_length,
            blocklist=load_blocklist(),
            breached=BreachedPasswordChecker(
                url, timeout_seconds=settings.breached_passwords_timeout_seconds
            )
            if url
            else None,
        )

    def check(
        self, password: str, *, email: str | None = None, has_second_factor: bool = False
    ) -> str | None:
        if not _is_utf8_encodable(password):
            # A lone surrogate (possible from stdin or a non-JSON caller) has no bytes to hash.
            return "Password must be valid Unicode text."
        # Length counts characters as the user typed them: NFKC folds compatibility forms so
        # the same password typed on two keyboards measures the same (§3.1.1.2 counts each
        # Unicode code point of the normalized form as one character).
        length = len(unicodedata.normalize("NFKC", password))
        minimum = self.min_length_with_mfa if has_second_factor else self.min_length
        if length < minimum:
            return f"Password must be at least {minimum} characters long."
        if length > self.max_length:
            return f"Password must be at most {self.max_length} characters long."
        if not password.strip():
            return "Password must not be only whitespace."
        if email:
            folded = password.casefold()
            local = email.split("@", 1)[0].casefold()
            if folded == email.casefold() or (len(local) >= 3 and folded == local):
                return "Password must not be your email address."
        if self._blocklist is not None and password in self._blocklist:
            return LISTED
        return None

    async def validate(
        self, password: str, *, email: str | None = None, has_second_factor: bool = False
    ) -> str | None:
        """The offline checks, then (when configured) the online one."""
        reason = self.check(password, email=email, has_second_factor=has_second_factor)
        if reason is not None or self._breached is None:
            return reason
        if await self._breached.is_breached(password):
            return BREACHED
        return None
