"""What a grant is, what it gets, and the registry the token endpoint dispatches through.

RFC 6749 §4 tells grant types apart by the ``grant_type`` parameter. Each is one module in this
package with one class satisfying ``Grant``, listed once in ``main.build_services``; the route
parses the form and hands it here, and discovery lists ``GrantRegistry.grant_types``. Every
grant ends with the one token issuer (``services.issuer``), which signs and then commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from authsvc.errors import OAuthError
from authsvc.observability import Metrics
from authsvc.ratelimit.limiter import RateLimiter
from authsvc.ratelimit.rules import RateRules
from authsvc.security.device_tokens import DeviceTokenCodec
from authsvc.services.issuer import IssuedTokens, TokenIssuer
from authsvc.services.mfa import MfaKit
from authsvc.services.sessions import SessionPolicy
from authsvc.services.throttle import ThrottleRules
from authsvc.services.users import UserManager

_MAX_GRANT_TYPE = 64


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint, apart from HTTP: the form's text fields and the
    transport facts grants need."""

    grant_type: str
    params: Mapping[str, str]
    # The Authorization header, for client authentication (RFC 6749 §2.3.1).
    authorization: str | None
    client_ip: str
    user_agent: str | None

    def required(self, name: str, max_length: int) -> str:
        return _required(name, self.params.get(name), max_length)

    def optional(self, name: str) -> str | None:
        return self.params.get(name) or None


def _required(name: str, value: str | None, max_length: int) -> str:
    if not value:
        raise OAuthError("invalid_request", f"The {name} parameter is required.")
    if len(value) > max_length:
        raise OAuthError("invalid_request", f"The {name} parameter is too long.")
    return value


def token_request(
    params: Mapping[str, str],
    *,
    authorization: str | None,
    client_ip: str,
    user_agent: str | None,
) -> TokenRequest:
    """The request, once ``grant_type`` is known to be there (RFC 6749 §4: required)."""
    grant_type = _required("grant_type", params.get("grant_type"), _MAX_GRANT_TYPE)
    return TokenRequest(grant_type, params, authorization, client_ip, user_agent)


@dataclass(frozen=True)
class GrantContext:
    """What a grant works with during one request: the request's database session (one
    transaction, committed by ``issuer``), its account manager, and the long-lived parts it
    needs (named one by one: the services container holds the registry, so the grants cannot
    know the container without an import cycle)."""

    db: AsyncSession
    users: UserManager
    issuer: TokenIssuer
    limiter: RateLimiter
    rules: RateRules
    metrics: Metrics
    session_policy: SessionPolicy
    # The password grant's: the sign-in throttle's curve, the device tokens it hands out and
    # honours, and whether an unverified address may sign in.
    throttle: ThrottleRules
    devices: DeviceTokenCodec
    require_verified_email: bool
    # Second factors (the password grant's challenge, the MFA grant), and the client a
    # challenge is bound to: the built-in first-party client the password grant serves.
    mfa: MfaKit
    client_id: str


class Grant(Protocol):
    """One grant type: checks what the request presents and issues through the issuer."""

    @property
    def grant_type(self) -> str:
        """The ``grant_type`` value it answers (an absolute URI for extension grants)."""
        ...

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens: ...


class GrantRegistry:
    """The grant types the token endpoint answers, in the order they were registered."""

    def __init__(self, grants: Iterable[Grant]) -> None:
        self._grants: dict[str, Grant] = {}
        for grant in grants:
            if grant.grant_type in self._grants:
                raise ValueError(f"grant type {grant.grant_type!r} registered twice")
            self._grants[grant.grant_type] = grant

    @property
    def grant_types(self) -> list[str]:
        return list(self._grants)

    def get(self, grant_type: str) -> Grant:
        grant = self._grants.get(grant_type)
        if grant is None:
            raise OAuthError(
                "unsupported_grant_type",
                f"Grant type {grant_type[:_MAX_GRANT_TYPE]!r} is not supported.",
            )
        return grant

    async def exchange(self, request: TokenRequest, context: GrantContext) -> IssuedTokens:
        grant = self.get(request.grant_type)
        issued = await grant.exchange(request, context)
        # Counted once the tokens are signed and committed: only tokens handed out.
        context.metrics.tokens.labels(grant.grant_type).inc()
        return issued
