"""Settings, read from ``AUTHSVC_*`` environment variables or a ``.env`` file.

Every setting is listed, with its default and meaning, in ``.env.example``; a test keeps the two
in step. ``get_settings()`` is the only place that reads the environment, so tests build a
``Settings(...)`` of their own and pass it to ``create_app``.
"""

from __future__ import annotations

import ipaddress
import json
from functools import cache
from pathlib import Path
from typing import Annotated, Literal, Self

from limits import parse as parse_limit
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values that mean "nobody chose a secret": refused outside development.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "please-change-me"})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The issuer when nobody set one and no ``authsvc serve`` derived one (an app built in-process).
DEFAULT_ISSUER = "http://127.0.0.1:8000"
# Roles that count only in a session signed in with a second factor (AUTHSVC_MFA_REQUIRED_ROLES).
DEFAULT_MFA_REQUIRED_ROLES = ("admin",)


def issuer_for_bind(host: str, port: int) -> str:
    """The issuer of a service nobody gave one: where ``authsvc serve`` listens.

    A wildcard bind (``0.0.0.0``, ``::``, empty) is no address a client could reach, so it
    becomes ``127.0.0.1`` (a dual-stack ``::`` bind accepts IPv4 too): the same issuer as
    before for ``--port 8000``, the Docker image's bind. An IPv6 literal gets its brackets
    (RFC 3986 §3.2.2); a host name stays as given.
    """
    try:
        address = ipaddress.ip_address(host.strip("[]")) if host else None
    except ValueError:
        return f"http://{host}:{port}"  # a name, e.g. localhost
    if address is None or address.is_unspecified:
        return f"http://127.0.0.1:{port}"
    if address.version == 6:
        return f"http://[{address.compressed}]:{port}"
    return f"http://{address}:{port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AUTHSVC_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # AUTHSVC_X= (empty) means "not set", as compose files write optional values.
        env_ignore_empty=True,
    )

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("authsvc-data")
    database_url: str | None = None
    migrate_on_start: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    metrics_token: SecretStr | None = None

    # Tokens
    # Unset, ``authsvc serve`` derives it from --host/--port (``issuer_for_bind``).
    issuer: str = DEFAULT_ISSUER
    access_token_audience: str = "authsvc"
    access_token_lifetime_seconds: int = Field(default=900, ge=30, le=86_400)
    client_id: str = "authsvc"
    signing_algorithm: Literal["RS256", "ES256"] = "RS256"
    signing_key_file: Path | None = None
    key_encryption_key: SecretStr | None = None
    key_activation_delay_seconds: int = Field(default=60, ge=0, le=86_400)
    token_secret: SecretStr | None = None
    # Sessions and refresh tokens
    refresh_idle_seconds: int = Field(default=1_209_600, ge=60)
    session_lifetime_seconds: int = Field(default=2_592_000, ge=60)
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=300)
    refresh_reuse_grace_max: int = Field(default=2, ge=0, le=20)
    verify_token_lifetime_seconds: int = Field(default=86_400, ge=60)
    reset_token_lifetime_seconds: int = Field(default=3_600, ge=60)

    # Roles and policies
    default_role: str = "user"
    # None: the policies shipped with authsvc (the repository's policies/ folder).
    policies_dir: Path | None = None
    # The "trusted networks" of the guardrail policy (context.trusted_network): loopback and
    # the private ranges unless set.
    trusted_networks: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=lambda: [
            ipaddress.ip_network(n)
            for n in (
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            )  # fmt: skip
        ]
    )

    # Step-up: holders of these roles get nothing from them (nor from the roles they inherit
    # through them) unless the session signed in with a second factor (amr has "mfa").
    # Superusers are not a role: this does not cover them.
    mfa_required_roles: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_MFA_REQUIRED_ROLES)
    )
    # Changing the password or the email (and the second factor) needs a sign-in (the token's
    # auth_time) at most this old.
    reauth_max_age_seconds: int = Field(default=300, ge=1, le=86_400)

    # Passwords (NIST SP 800-63B-4 §3.1.1.2): at least 15 characters when the password is the
    # only factor; verifiers SHOULD accept at least 64; no composition rules.
    password_min_length: int = Field(default=15, ge=1, le=64)
    password_max_length: int = Field(default=128, ge=64, le=1024)
    # New hashes: Argon2id (OWASP's first choice) or bcrypt (as bcrypt_sha256). Hashes of the
    # other scheme still verify and are replaced at the next successful login.
    password_scheme: Literal["argon2", "bcrypt"] = "argon2"
    # OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1 (RFC 9106's second choice is
    # m=64 MiB, t=3, p=4). Weaker hashes are upgraded at the next login.
    argon2_memory_kib: int = Field(default=19_456, ge=1024, le=4_194_304)
    argon2_time_cost: int = Field(default=2, ge=1, le=32)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    bcrypt_rounds: int = Field(default=12, ge=4, le=20)
    password_hash_concurrency: int = Field(default=2, ge=1, le=64)
    # NIST SP 800-63B-4 §3.1.1.2: 8 characters once the account has a second factor.
    password_min_length_with_mfa: int = Field(default=8, ge=1, le=64)
    # Optional k-anonymity check against a Pwned-Passwords-style range API ("<url><5 hex>"
    # answers "SUFFIX:COUNT" lines). Off (None or empty) by default; fails open with a warning
    # after the timeout (one deadline for the whole exchange).
    breached_passwords_api_url: str | None = None
    breached_passwords_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    # Accounts: email verification and sign-in throttling
    require_verified_email: bool = True
    # Consecutive failures per account identifier before delays start; then the delay before
    # the next attempt is evaluated doubles from the base up to the maximum.
    login_throttle_threshold: int = Field(default=5, ge=1, le=100)
    login_throttle_base_delay_seconds: float = Field(default=1.0, gt=0, le=3_600)
    login_throttle_max_delay_seconds: float = Field(default=900.0, gt=0, le=86_400)
    # NIST SP 800-63B-4 §3.2.2: at most 100 consecutive failures; then no password is
    # evaluated from an untrusted device until a reset, an unlock or a trusted device's sign-in.
    login_max_consecutive_failures: int = Field(default=100, ge=1, le=100)
    # Device tokens (OWASP "device cookies"): how long one is honoured, and how many
    # consecutive failures one device may make before it is throttled like anyone else.
    device_token_lifetime_seconds: int = Field(default=15_552_000, ge=3_600)
    device_max_failures: int = Field(default=10, ge=1, le=100)
    # Second factors (issue 14): the issuer label authenticator apps show next to the account,
    # and how long the mfa_token of a password sign-in waits for its code.
    totp_issuer: str = Field(default="authsvc", min_length=1, max_length=64)
    mfa_token_lifetime_seconds: int = Field(default=300, ge=30, le=3_600)

    # Rate limits (the "limits" notation: "N/second|minute|hour|day")
    ratelimit_enabled: bool = True
    ratelimit_storage_uri: str = "memory://"
    ratelimit_fail_open: bool = False
    ratelimit_login_ip: str = "20/minute"
    ratelimit_login_username: str = "10/minute"
    ratelimit_register_ip: str = "10/hour"
    ratelimit_password_reset_ip: str = "10/hour"
    ratelimit_authenticated: str = "300/minute"
    ratelimit_anonymous: str = "120/minute"
    # NoDecode: the environment gives a comma list, which the validator below splits.
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)

    # HTTP
    max_body_bytes: int = Field(default=65_536, ge=1_024)

    # Notifications (verification and reset tokens)
    notifier: Literal["console", "smtp"] = "console"
    public_url: str | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=587, ge=1, le=65_535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_sender: str = "authsvc <no-reply@localhost>"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_ca_file: Path | None = None

    @field_validator("trusted_proxies", "trusted_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        # Accept "10.0.0.1,10.0.1.0/24" from the environment as well as a JSON list.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mfa_required_roles", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        # "admin,ops" from the environment as well as a JSON list; "" is no role at all.
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("ratelimit_storage_uri")
    @classmethod
    def _known_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError("must be memory:// or redis://host:port/db")
        return value

    @field_validator(
        "ratelimit_login_ip",
        "ratelimit_login_username",
        "ratelimit_register_ip",
        "ratelimit_password_reset_ip",
        "ratelimit_authenticated",
        "ratelimit_anonymous",
    )
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        try:
            parse_limit(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '20/minute': {exc}") from None
        return value

    @field_validator("breached_passwords_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL the 5-hex-digit prefix is appended to")
        return value or None

    @model_validator(mode="after")
    def _secure_outside_development(self) -> Self:
        if self.password_min_length > self.password_max_length:
            raise ValueError("password_min_length must not exceed password_max_length")
        if self.smtp_security == "none" and self.smtp_username:
            raise ValueError(
                "AUTHSVC_SMTP_USERNAME with AUTHSVC_SMTP_SECURITY=none would send the SMTP "
                "password in clear; use starttls or tls"
            )
        if self.environment == "development":
            return self
        problems: list[str] = []
        secret = self.token_secret.get_secret_value() if self.token_secret else ""
        if secret.strip().lower() in PLACEHOLDER_SECRETS or len(secret) < 32:
            problems.append("AUTHSVC_TOKEN_SECRET must be set to a random value of 32+ characters")
        if self.notifier == "console":
            problems.append(
                "AUTHSVC_NOTIFIER=console prints reset and verification tokens; use smtp"
            )
        if self.database_url is None:
            problems.append("AUTHSVC_DATABASE_URL must be set")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def issuer_configured(self) -> bool:
        """AUTHSVC_ISSUER was set (environment, ``.env`` or an argument), even to the default."""
        return "issuer" in self.model_fields_set

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'authsvc.db').as_posix()}"

    @property
    def database_backend(self) -> str:
        """The database's dialect name, for logs (never the URL: it may hold a password)."""
        return self.resolved_database_url.split(":", 1)[0].split("+", 1)[0]

    @property
    def resolved_policies_dir(self) -> Path:
        if self.policies_dir is not None:
            return self.policies_dir
        package_dir = Path(__file__).resolve().parent
        # A wheel carries them inside the package; a source checkout has them at the top.
        for candidate in (package_dir / "_policies", package_dir.parent / "policies"):
            if candidate.is_dir():
                return candidate
        return package_dir.parent / "policies"  # absent: the start-up check says so

    @property
    def policy_reload_marker(self) -> Path:
        return self.data_dir / "policies-reloaded"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / f"signing-key-{self.signing_algorithm}.pem"


@cache
def get_settings() -> Settings:
    return Settings()
