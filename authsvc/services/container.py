"""Everything a running app holds once: built by ``main.create_app``, read by dependencies."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from authsvc.config import Settings
from authsvc.notify.outbox import Outbox
from authsvc.observability import Metrics
from authsvc.ratelimit.limiter import RateLimiter
from authsvc.ratelimit.rules import RateRules
from authsvc.security.keys import KeyRing
from authsvc.security.keystore import KeyStore
from authsvc.security.password_policy import PasswordPolicy
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import AccessTokenCodec
from authsvc.services.callers import CallerResolver
from authsvc.services.grants.base import GrantRegistry
from authsvc.services.mfa import MfaKit
from authsvc.services.policies import PolicyStore
from authsvc.services.sessions import SessionPolicy


@dataclass(frozen=True)
class AppServices:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    hasher: PasswordHasher
    policy: PasswordPolicy
    notifier: Outbox
    keys: KeyRing
    codec: AccessTokenCodec
    callers: CallerResolver
    limiter: RateLimiter
    rules: RateRules
    token_secret: str
    session_policy: SessionPolicy
    keystore: KeyStore | None
    metrics: Metrics
    policies: PolicyStore
    # The token endpoint's grant types (and discovery's grant_types_supported).
    grants: GrantRegistry
    # Second factors' keys, codecs and clock (issue 14).
    mfa: MfaKit
