"""The token endpoint's grants: one module a grant type, one registry (``base``)."""

from authsvc.services.grants.base import (
    Grant,
    GrantContext,
    GrantRegistry,
    TokenRequest,
    token_request,
)
from authsvc.services.grants.client_credentials import ClientCredentialsGrant
from authsvc.services.grants.mfa import MfaGrant
from authsvc.services.grants.password import PasswordGrant
from authsvc.services.grants.refresh import RefreshTokenGrant

__all__ = [
    "ClientCredentialsGrant",
    "Grant",
    "GrantContext",
    "GrantRegistry",
    "MfaGrant",
    "PasswordGrant",
    "RefreshTokenGrant",
    "TokenRequest",
    "token_request",
]
