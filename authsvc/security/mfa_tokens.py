"""The ``mfa_token`` the password grant hands out when a second factor is due: it names an
``mfa_challenges`` row, ``m1.<challenge id>.<HMAC-SHA256>``. The MAC key is derived from the
token secret for this purpose alone (``authsvc:mfa``), so it is neither an access token (those
are RS256/ES256 JWTs the resolver verifies with the signing keys) nor a device, verify or reset
token. Expiry, single use, the account and the client are the row's business.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

AUDIENCE = b"authsvc:mfa"
_VERSION = "m1"
_MAX_LENGTH = 128


class MfaTokenCodec:
    def __init__(self, secret: str) -> None:
        self._key = hmac.new(secret.encode(), AUDIENCE, hashlib.sha256).digest()

    def issue(self, challenge_id: uuid.UUID) -> str:
        payload = f"{_VERSION}.{challenge_id.hex}"
        return f"{payload}.{self._mac(payload)}"

    def read(self, token: str) -> uuid.UUID | None:
        """The challenge a genuine token names; None for anything else."""
        if not token or len(token) > _MAX_LENGTH:
            return None
        payload, _, mac = token.rpartition(".")
        if not hmac.compare_digest(mac.encode("utf-8", "replace"), self._mac(payload).encode()):
            return None
        version, _, challenge = payload.partition(".")
        if version != _VERSION:
            return None
        try:
            return uuid.UUID(hex=challenge)
        except ValueError:
            return None

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode("utf-8", "replace"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
