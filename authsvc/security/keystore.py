"""Signing keys on disk, with rotation: publish first, sign later, retire after the last token.

One PEM file per key in a directory, named ``<activates_at>-<alg>.pem`` (Unix seconds). A new
key is published in the JWKS at once but signs only from ``activates_at`` on (after an
activation delay), so verifiers that cache the JWKS have it before the first token it signs.
A key superseded by a newer active one stays published until every token it signed has
expired (``token_lifetime`` plus a margin), then it is retired: dropped from the JWKS and its
file deleted at the next rotation.

Workers see a rotation by re-listing the directory every few seconds; files already parsed are
kept (parsing an RSA PEM costs tens of ms), so a re-list costs a ``scandir``. With a
key-encryption key configured, the PEM files are encrypted (PKCS#8, the best available cipher).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from authsvc.security.keys import (
    Algorithm,
    KeyLoadError,
    SigningKey,
    generate_private_pem,
    signing_key_from_pem,
)

_FILE = re.compile(r"^(\d{1,12})-(RS256|ES256)\.pem$")
RETIRE_MARGIN_SECONDS = 300


def _encrypt(pem: bytes, kek: bytes | None) -> bytes:
    if kek is None:
        return pem
    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(kek),
    )


def _decrypt(pem: bytes, kek: bytes | None) -> bytes:
    encrypted = b"ENCRYPTED" in pem
    if not encrypted:
        return pem
    if kek is None:
        raise KeyLoadError("the key is encrypted; set AUTHSVC_KEY_ENCRYPTION_KEY")
    try:
        key = serialization.load_pem_private_key(pem, password=kek)
    except (ValueError, TypeError):
        raise KeyLoadError("cannot decrypt: wrong AUTHSVC_KEY_ENCRYPTION_KEY?") from None
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_new(directory: Path, name: str, content: bytes) -> bool:
    """Write ``name`` atomically; False if it already exists (another process won)."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".key-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content)
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, directory / name)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


class KeyStore:
    def __init__(
        self,
        directory: Path,
        alg: Algorithm,
        *,
        token_lifetime_seconds: int,
        activation_delay_seconds: int = 60,
        kek: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.alg = alg
        self.token_lifetime = token_lifetime_seconds
        self.activation_delay = activation_delay_seconds
        self.kek = kek
        self.clock = clock
        self._parsed: dict[str, SigningKey] = {}
        self._lock = threading.Lock()

    def ensure(self, legacy_file: Path | None = None) -> None:
        """Create the first key if there is none (active at once), importing a legacy file."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._files():
            return
        if legacy_file is not None and legacy_file.is_file():
            try:
                pem = _decrypt(legacy_file.read_bytes(), self.kek)
                signing_key_from_pem(pem, self.alg)  # import only a usable key
            except KeyLoadError as exc:
                raise KeyLoadError(f"signing key file {legacy_file}: {exc}") from None
        else:
            pem = generate_private_pem(self.alg)
        _write_new(self.directory, f"{0:012d}-{self.alg}.pem", _encrypt(pem, self.kek))

    def rotate(self) -> SigningKey:
        """Add a key that signs from ``now + activation delay``; delete retired files."""
        activates_at = int(self.clock()) + self.activation_delay
        name = f"{activates_at:012d}-{self.alg}.pem"
        while not _write_new(self.directory, name, _encrypt(generate_private_pem(self.alg),
                                                             self.kek)):  # fmt: skip
            activates_at += 1
            name = f"{activates_at:012d}-{self.alg}.pem"
        for retired in self._retired_files():
            retired.unlink(missing_ok=True)
        return self._load_file(self.directory / name, activates_at)

    def load(self) -> list[SigningKey]:
        """The published keys, oldest first (retired ones left out)."""
        retired = set(self._retired_files())
        keys = [
            self._load_file(path, activates_at)
            for path, activates_at in self._files()
            if path not in retired
        ]
        if not keys:
            raise KeyLoadError(f"no signing keys in {self.directory}; run `authsvc serve` once")
        return keys

    def _files(self) -> list[tuple[Path, int]]:
        found = []
        for entry in os.scandir(self.directory):
            match = _FILE.match(entry.name)
            if match and match.group(2) == self.alg:
                found.append((Path(entry.path), int(match.group(1))))
        return sorted(found, key=lambda item: item[1])

    def _retired_files(self) -> list[Path]:
        now = self.clock()
        files = self._files()
        retired = []
        for (path, _), (_, successor_activates) in zip(files, files[1:], strict=False):
            # Superseded once the successor signs; its tokens live token_lifetime at most.
            if now > successor_activates + self.token_lifetime + RETIRE_MARGIN_SECONDS:
                retired.append(path)
        return retired

    def _load_file(self, path: Path, activates_at: int) -> SigningKey:
        with self._lock:
            cached = self._parsed.get(path.name)
            if cached is not None:
                return cached
            try:
                key = signing_key_from_pem(_decrypt(path.read_bytes(), self.kek), self.alg)
            except KeyLoadError as exc:
                raise KeyLoadError(f"signing key file {path}: {exc}") from None
            key = replace(key, activates_at=float(activates_at))
            self._parsed[path.name] = key
            return key
