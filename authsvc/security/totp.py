"""TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, as every authenticator app reads an
``otpauth://`` URI without parameters. pyotp computes the codes; the tests check them against
RFC 6238 Appendix B and an independent HMAC reference.

Verification accepts the current step and one on either side (RFC 6238 §5.2: clock drift and
transmission delay) and says which step matched, so the caller can refuse that step and every
earlier one next time (§5.2: a code is accepted once).
"""

from __future__ import annotations

import hmac
import io
from datetime import datetime

import pyotp
import segno

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1


def new_secret() -> str:
    """160 random bits (RFC 4226 §4 R6 recommends 160), base32 as the URI carries it."""
    return pyotp.random_base32(length=32)


def step_at(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step within ±``DRIFT_STEPS`` of ``now`` whose code is ``code``, else None.
    Every candidate is compared (constant time), so the answer's timing says nothing of which
    step matched."""
    current = step_at(now)
    found: int | None = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at(secret, step).encode(), code.encode()) and found is None:
            found = step
    return found


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://totp/<issuer>:<account>?secret=...&issuer=...`` URI (Google
    Authenticator's Key Uri Format) that authenticator apps scan."""
    return pyotp.TOTP(secret, issuer=issuer).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The URI as a QR code: a standalone SVG document (no script, no external reference)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", xmldecl=False, scale=4, border=4)
    return buffer.getvalue().decode("utf-8")
