"""Signing keys: generated on first start, persisted as PEM, loaded once into key objects.

Loading a PEM and building a key object costs tens of milliseconds (RSA), so it happens once per
process; signing and verification reuse the objects. The ``kid`` is the RFC 7638 thumbprint of
the public key, so the same key always gets the same id, in every worker and on every host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk
from jose.backends.base import Key

Algorithm = Literal["RS256", "ES256"]

log = logging.getLogger("authsvc.keys")

_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: Algorithm
    private_key: Key = field(repr=False)
    public_key: Key = field(repr=False)
    public_jwk: dict[str, str]
    # Signs only from this Unix time on; published (verifiable) before that.
    activates_at: float = 0.0


def thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, no whitespace."""
    members = _THUMBPRINT_MEMBERS[public_jwk["kty"]]
    canonical = json.dumps({m: public_jwk[m] for m in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def generate_private_pem(alg: Algorithm) -> bytes:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class KeyLoadError(ValueError):
    """The key file is unreadable or not a private key for the configured algorithm."""


def signing_key_from_pem(pem: bytes, alg: Algorithm) -> SigningKey:
    try:
        private_key = jwk.construct(pem, alg)
        public_key = private_key.public_key()
    except Exception as exc:  # noqa: BLE001 - jose raises several types for bad PEMs
        raise KeyLoadError(
            f"not a {alg} private key in PEM format ({type(exc).__name__})"
        ) from None
    if b"PRIVATE KEY" not in pem:
        raise KeyLoadError(f"not a {alg} private key in PEM format (public key only)")
    public = {k: str(v) for k, v in public_key.to_dict().items()}
    kid = thumbprint(public)
    public_jwk = {**public, "kid": kid, "alg": alg, "use": "sig"}
    return SigningKey(kid, alg, private_key, public_key, public_jwk)


def load_or_create_signing_key(path: Path, alg: Algorithm) -> SigningKey:
    """Load the key at ``path``; create it first if absent.

    Creation is atomic and race-free: the PEM is written to a private temporary file and then
    hard-linked into place, which fails if another process (a second worker) won the race — in
    which case we load the winner's key, so every worker signs with the same key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, generate_private_pem(alg))
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    try:
        return signing_key_from_pem(path.read_bytes(), alg)
    except KeyLoadError as exc:
        raise KeyLoadError(f"signing key file {path}: {exc}") from None


class KeyRing:
    """The keys this service signs with and accepts, oldest first.

    The newest key whose ``activates_at`` has come signs. With a ``loader`` (a key store), the
    ring re-reads it at most every ``reload_seconds``, so every worker follows a rotation.
    """

    def __init__(
        self,
        keys: list[SigningKey],
        *,
        loader: Callable[[], list[SigningKey]] | None = None,
        reload_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._loader = loader
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._next_reload = clock() + reload_seconds
        self._set(keys)

    def _set(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self._keys = sorted(keys, key=lambda key: key.activates_at)
        self._by_kid = {key.kid: key for key in self._keys}

    def reload(self) -> None:
        if self._loader is None:
            return
        self._next_reload = self._clock() + self._reload_seconds
        try:
            self._set(self._loader())
        except (KeyLoadError, OSError, ValueError) as exc:
            # A bad file dropped in the key folder must not take the service down: keep
            # signing and verifying with the keys already loaded, and say so.
            log.error("keeping the loaded signing keys; cannot reload them: %s", exc)

    def _fresh(self) -> None:
        if self._loader is not None and self._clock() >= self._next_reload:
            self.reload()

    @property
    def active(self) -> SigningKey:
        self._fresh()
        now = self._clock()
        ready = [key for key in self._keys if key.activates_at <= now]
        return ready[-1] if ready else self._keys[0]

    def get(self, kid: str) -> SigningKey | None:
        self._fresh()
        return self._by_kid.get(kid)

    def published(self) -> list[SigningKey]:
        self._fresh()
        return list(self._keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        self._fresh()
        # Newest first: clients that take the first matching key find the active one fastest.
        return {"keys": [key.public_jwk for key in reversed(self._keys)]}
