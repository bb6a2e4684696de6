"""Keys of the second factors, and the box their TOTP secrets are kept in at rest.

Every key here is derived with HKDF-SHA256 (RFC 5869) from one root, with a purpose label as
``info`` (``authsvc:totp`` for the secret box, ``authsvc:recovery`` for recovery code hashes),
so a key of one purpose never works for another, nor for the token secret's own MACs.

The root is ``AUTHSVC_KEY_ENCRYPTION_KEY`` when set (the key that already wraps the signing
keys: one secret to keep out of the database and its backups), else the token secret that
signs verify and reset tokens (``main.load_token_secret``: a setting, or a file in the data
directory in development). Either way the root is outside the database, so a stolen dump
holds neither the TOTP secrets nor a way to test recovery codes offline.

Both roots are tried when reading (``Keys.all``): setting a key-encryption key after users
enrolled moves new writes to it and keeps the old secrets and codes readable. Changing or
removing a root that wrote something makes what it wrote unreadable (the factor has to be
reset by an administrator), like any key rotation without re-encryption.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOTP_INFO = b"authsvc:totp"
RECOVERY_INFO = b"authsvc:recovery"
_VERSION = "g1"
_NONCE_BYTES = 12  # NIST SP 800-38D §8.2: 96-bit nonces, random for each message


def derive(root: bytes, info: bytes) -> bytes:
    """A 256-bit key for one purpose (RFC 5869; no salt: the root is already a key)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(root)


@dataclass(frozen=True)
class Keys:
    """The roots, newest first: the first writes, all are tried when reading."""

    roots: tuple[bytes, ...]

    @classmethod
    def from_secrets(cls, key_encryption_key: str | None, token_secret: str) -> Keys:
        roots = [key_encryption_key.encode()] if key_encryption_key else []
        roots.append(token_secret.encode())
        return cls(tuple(roots))

    def primary(self, info: bytes) -> bytes:
        return derive(self.roots[0], info)

    def all(self, info: bytes) -> list[bytes]:
        return [derive(root, info) for root in self.roots]


class SecretUnreadable(Exception):
    """A sealed secret none of the keys opens (tampered, or sealed under a key now gone)."""


class SecretBox:
    """AES-256-GCM: ``g1.<base64url(nonce | ciphertext | tag)>``. The associated data (the
    owner's id) binds a sealed secret to its row: copied onto another account it opens no more."""

    def __init__(self, keys: Keys) -> None:
        self._write = AESGCM(keys.primary(TOTP_INFO))
        self._read = [AESGCM(key) for key in keys.all(TOTP_INFO)]

    def seal(self, secret: str, bound_to: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._write.encrypt(nonce, secret.encode(), bound_to)
        return f"{_VERSION}.{base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, sealed: str, bound_to: bytes) -> str:
        version, _, body = sealed.partition(".")
        if version != _VERSION:
            raise SecretUnreadable("unknown format")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
        except (binascii.Error, ValueError) as exc:
            raise SecretUnreadable("not base64") from exc
        nonce, ciphertext = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        for box in self._read:
            try:
                return box.decrypt(nonce, ciphertext, bound_to).decode()
            except InvalidTag:
                continue
        raise SecretUnreadable("no key opens it")
