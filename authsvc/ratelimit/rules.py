"""The named rate-limit rules, parsed once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from authsvc.config import Settings
from authsvc.ratelimit.limiter import Rule


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
