"""Password policy in the spirit of NIST SP 800-63B §5.1.1.2.

A length floor, a generous ceiling, no composition rules, and a deny-list of the most common
passwords. The list ships in the package (``data/common-passwords.txt.gz``, from Django; see
``data/LICENSE-common-passwords.txt``) and is read once per process.
"""

from __future__ import annotations

import gzip
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources

# SP 800-63B §5.1.1.2: verifiers SHOULD accept at least 64 characters.
MIN_ACCEPTED_MAX_LENGTH = 64


@lru_cache(maxsize=1)
def load_common_passwords() -> frozenset[str]:
    """The shipped deny-list, lower-cased (comparisons are case-insensitive)."""
    raw = (resources.files("authsvc.security") / "data" / "common-passwords.txt.gz").read_bytes()
    text = gzip.decompress(raw).decode("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


class PasswordPolicy:
    """``check()`` answers ``None`` for an acceptable password, else a reason a user can act on."""

    def __init__(
        self, *, min_length: int, max_length: int, common_passwords: Iterable[str] = ()
    ) -> None:
        if min_length < 1:
            raise ValueError("min_length must be at least 1")
        if max_length < max(min_length, MIN_ACCEPTED_MAX_LENGTH):
            raise ValueError(
                f"max_length must be at least {MIN_ACCEPTED_MAX_LENGTH} and at least min_length"
            )
        self.min_length = min_length
        self.max_length = max_length
        self._common = frozenset(p.lower() for p in common_passwords)

    def check(self, password: str, *, email: str | None = None) -> str | None:
        # Length counts characters as the user typed them: NFKC folds compatibility forms so
        # the same password typed on two keyboards measures the same.
        length = len(unicodedata.normalize("NFKC", password))
        if length < self.min_length:
            return f"Password must be at least {self.min_length} characters long."
        if length > self.max_length:
            return f"Password must be at most {self.max_length} characters long."
        if not password.strip():
            return "Password must not be only whitespace."
        folded = password.lower()
        if folded in self._common:
            return "This password is too common; choose one that is harder to guess."
        if email:
            local = email.split("@", 1)[0].lower()
            if folded == email.lower() or (len(local) >= 3 and folded == local):
                return "Password must not be your email address."
        return None
