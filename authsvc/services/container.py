"""Everything a running app holds once: built by ``main.create_app``, read by dependencies."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from authsvc.config import Settings
from authsvc.notify.outbox import Outbox
from authsvc.observability import Metrics
from authsvc.ratelimit.limiter import RateLimiter, Rule
from authsvc.security.keys import KeyRing
from authsvc.security.keystore import KeyStore
from authsvc.security.password_policy import PasswordPolicy
from authsvc.security.passwords import PasswordHasher
from authsvc.security.tokens import AccessTokenCodec
from authsvc.services.grants.base import GrantRegistry
from authsvc.services.policies import PolicyStore
from authsvc.services.sessions import SessionPolicy


@dataclass(frozen=True)
class RateRules:
    login_ip: Rule
    login_username: Rule
    register_ip: Rule
    password_reset_ip: Rule
    authenticated: Rule
    anonymous: Rule

    @classmethod
    def from_settings(cls, settings: Settings) -> RateRules:
        return cls(
            login_ip=Rule.parse("login-ip", settings.ratelimit_login_ip),
            login_username=Rule.parse("login-username", settings.ratelimit_login_username),
            register_ip=Rule.parse("register-ip", settings.ratelimit_register_ip),
            password_reset_ip=Rule.parse("password-reset-ip", settings.ratelimit_password_reset_ip),
            authenticated=Rule.parse("user", settings.ratelimit_authenticated),
            anonymous=Rule.parse("anonymous-ip", settings.ratelimit_anonymous),
        )


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
    limiter: RateLimiter
    rules: RateRules
    token_secret: str
    session_policy: SessionPolicy
    keystore: KeyStore | None
    metrics: Metrics
    policies: PolicyStore
    # The token endpoint's grant types (and discovery's grant_types_supported).
    grants: GrantRegistry
