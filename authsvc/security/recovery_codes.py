"""Recovery codes: ten single-use codes shown once at enrolment, for when the authenticator is
lost. Each is 16 base32 characters from ``secrets`` (80 bits), shown as ``xxxx-xxxx-xxxx-xxxx``
and accepted in any case, with or without dashes and spaces.

Stored as HMAC-SHA256 under a key derived from a root outside the database
(``security.secretbox``, info ``authsvc:recovery``), not as an Argon2 hash: a password hash is
slow because passwords are guessable; 80 random bits are not, so slowness buys nothing and
would only make every sign-in with a code (and twenty concurrent ones) cost a hash each. A
keyed hash (a pepper) is deterministic, so a code is found by one indexed lookup and spent by
one conditional UPDATE, and a database dump alone cannot test a single guess offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from authsvc.security.secretbox import RECOVERY_INFO, Keys

COUNT = 10
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
_LENGTH = 16
_GROUP = 4
_SHAPE = re.compile(rf"[{_ALPHABET}]{{{_LENGTH}}}")
_IGNORED = re.compile(r"[\s\-]+")


def new_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))
    return "-".join(raw[i : i + _GROUP] for i in range(0, _LENGTH, _GROUP))


def new_set() -> list[str]:
    return [new_code() for _ in range(COUNT)]


def normalize(presented: str) -> str | None:
    """The canonical form of something shaped like a recovery code, else None."""
    plain = _IGNORED.sub("", presented).lower()
    return plain if _SHAPE.fullmatch(plain) else None


class RecoveryHasher:
    def __init__(self, keys: Keys) -> None:
        self._write = keys.primary(RECOVERY_INFO)
        self._read = keys.all(RECOVERY_INFO)

    def hash(self, code: str) -> str:
        """The stored form of a code (issued or presented, any spelling)."""
        plain = normalize(code)
        if plain is None:
            raise ValueError("not a recovery code")
        return _mac(self._write, plain)

    def candidates(self, plain: str) -> list[str]:
        """Every stored form a normalized code may have (one per root, see ``secretbox``)."""
        return [_mac(key, plain) for key in self._read]


def _mac(key: bytes, plain: str) -> str:
    return hmac.new(key, plain.encode(), hashlib.sha256).hexdigest()
