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


class OAuthErrorBody(BaseModel):
    error: str = Field(description="RFC 6749 §5.2 error code, e.g. invalid_grant.")
    error_description: str
    detail: dict[str, str]
