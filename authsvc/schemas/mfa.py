"""Request and response models of second factors (``/users/me/mfa``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from authsvc.schemas.users import PASSWORD_FIELD_MAX

# Generous on purpose: a longer code than the service takes (64) is its 400
# ``MFA_CODE_INVALID``, not a schema 422; this bound only keeps bodies small.
_CODE_FIELD_MAX = 1024
_CODE_HELP = "The 6 digits the authenticator app shows now."


class MfaStatusRead(BaseModel):
    totp: Literal["none", "pending", "enabled"] = Field(
        description="`pending`: enrolled, waiting for its first code (asks nothing at sign-in)."
    )
    confirmed_at: datetime | None = None
    recovery_codes_remaining: int = Field(description="Unused recovery codes (0 unless enabled).")


class TotpEnrolmentRead(BaseModel):
    secret: str = Field(description="Base32, for typing into an app that cannot scan.")
    otpauth_uri: str = Field(description="The `otpauth://totp/...` URI the QR code holds.")
    qr_svg: str = Field(description="The URI as a QR code: an SVG document, no script.")


class CodeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(max_length=_CODE_FIELD_MAX, description=_CODE_HELP)


class RemoveTotpBody(BaseModel):
    """A current code, or (the authenticator lost) the password and a recovery code."""

    model_config = ConfigDict(extra="forbid")
    code: str | None = Field(default=None, max_length=_CODE_FIELD_MAX, description=_CODE_HELP)
    password: str | None = Field(default=None, max_length=PASSWORD_FIELD_MAX)
    recovery_code: str | None = Field(default=None, max_length=_CODE_FIELD_MAX)


class RecoveryCodesRead(BaseModel):
    recovery_codes: list[str] = Field(
        description="Ten single-use codes, shown this once: store them somewhere safe. Any "
        "earlier set stops working."
    )
