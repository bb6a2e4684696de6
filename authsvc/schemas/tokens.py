"""Token endpoint models (RFC 6749 §5.1 and §5.2)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_token: str | None = Field(
        default=None, description="Single use: trade it for a new pair at the token endpoint."
    )
    device_token: str | None = Field(
        default=None,
        description=(
            "Password grant only (an RFC 6749 §5.1 extension parameter): proof that this "
            "device signed in to the account. Keep it on the device and send it back as the "
            "`device_token` form field with `grant_type=password`: sign-ins that present it "
            "are judged by this device's own failures, so an attack on the account from "
            "elsewhere does not hold its owner back. A new one comes with every successful "
            "sign-in; it expires after `AUTHSVC_DEVICE_TOKEN_LIFETIME_SECONDS`."
        ),
    )


class OAuthErrorBody(BaseModel):
    error: str = Field(description="RFC 6749 §5.2 error code, e.g. invalid_grant.")
    error_description: str
    detail: dict[str, str]
    mfa_token: str | None = Field(
        default=None,
        description=(
            "With `error=mfa_required` only (the password was right, the account has a second "
            "factor): send it back with `grant_type=urn:authsvc:params:oauth:grant-type:mfa` "
            "and a `code`. Single use, valid `AUTHSVC_MFA_TOKEN_LIFETIME_SECONDS`, at most 5 "
            "codes; not an access token."
        ),
    )
