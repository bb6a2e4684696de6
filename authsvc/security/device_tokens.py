"""Device tokens (OWASP Authentication Cheat Sheet, "device cookies"): proof that a device has
signed in to an account before, so that its sign-ins are not held back by an attack on the
account from elsewhere.

A token names a ``trusted_devices`` row and its account and says until when it is honoured:
``d1.<device id>.<user id>.<expiry, unix seconds>.<HMAC-SHA256>``. The MAC key is derived
from the token secret for this one purpose (``authsvc:device``), so the MAC can never stand for
a verify, reset or revert token made with the same secret, nor they for it. Pure code: whether
the row exists, is revoked or belongs to the account is the caller's business.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

AUDIENCE = b"authsvc:device"
_VERSION = "d1"
# A real token is about 120 characters; anything much longer is not worth a MAC.
_MAX_LENGTH = 256


@dataclass(frozen=True)
class DeviceClaims:
    device_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime


class DeviceTokenCodec:
    def __init__(self, secret: str, lifetime_seconds: int) -> None:
        self._key = hmac.new(secret.encode(), AUDIENCE, hashlib.sha256).digest()
        self.lifetime = timedelta(seconds=lifetime_seconds)

    def issue(self, device_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> str:
        expires = int((now + self.lifetime).timestamp())
        payload = f"{_VERSION}.{device_id.hex}.{user_id.hex}.{expires}"
        return f"{payload}.{self._mac(payload)}"

    def read(self, token: str, now: datetime) -> DeviceClaims | None:
        """The claims of a genuine, unexpired token; None for anything else, whatever it is."""
        if not token or len(token) > _MAX_LENGTH:
            return None
        payload, _, mac = token.rpartition(".")
        # Bytes on both sides: compare_digest refuses non-ASCII text (a form may carry any).
        presented = mac.encode("utf-8", "replace")
        if not hmac.compare_digest(presented, self._mac(payload).encode()):
            return None
        parts = payload.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            return None
        _version, device, user, expires = parts
        try:
            claims = DeviceClaims(
                uuid.UUID(hex=device),
                uuid.UUID(hex=user),
                datetime.fromtimestamp(int(expires), now.tzinfo),
            )
        except (ValueError, OverflowError, OSError):
            return None
        return claims if claims.expires_at > now else None

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode("utf-8", "replace"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
