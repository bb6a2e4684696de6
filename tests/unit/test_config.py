"""Settings: defaults, environment variables, production refusals, and .env.example in sync."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from authsvc.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
GOOD_SECRET = SecretStr("k" * 40)


def production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "production",
        "token_secret": GOOD_SECRET,
        "notifier": "smtp",
        "database_url": "postgresql+asyncpg://authsvc@db/authsvc",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    listed = dict(re.findall(r"^#? ?(AUTHSVC_[A-Z0-9_]+)=(.*)$", text, re.M))
    expected = {f"AUTHSVC_{name.upper()}" for name in Settings.model_fields}
    assert set(listed) == expected
    defaults = Settings(_env_file=None)
    for name in Settings.model_fields:
        shown = listed[f"AUTHSVC_{name.upper()}"]
        value = getattr(defaults, name)
        if value is None or value == []:
            assert shown == "", name
        elif isinstance(value, bool):
            assert shown == str(value).lower(), name
        elif isinstance(value, float):
            assert float(shown) == value, name
        elif isinstance(value, list):
            assert shown == ",".join(str(v) for v in value), name
        else:
            assert shown == str(value), name


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_BCRYPT_ROUNDS", "10")
    monkeypatch.setenv("AUTHSVC_TRUSTED_PROXIES", "10.0.0.1, 10.1.0.0/16")
    settings = Settings(_env_file=None)
    assert settings.bcrypt_rounds == 10
    assert [str(net) for net in settings.trusted_proxies] == ["10.0.0.1/32", "10.1.0.0/16"]


def test_embedded_defaults_live_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/authsvc.db"
    assert settings.resolved_signing_key_file == tmp_path / "signing-key-RS256.pem"
    assert settings.database_backend == "sqlite"
    assert production().database_backend == "postgresql"


def test_a_complete_production_configuration_passes() -> None:
    assert production().environment == "production"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"token_secret": None}, "AUTHSVC_TOKEN_SECRET"),
        ({"token_secret": SecretStr("change-me")}, "AUTHSVC_TOKEN_SECRET"),
        ({"token_secret": SecretStr("short-but-random")}, "AUTHSVC_TOKEN_SECRET"),
        ({"notifier": "console"}, "AUTHSVC_NOTIFIER"),
        ({"database_url": None}, "AUTHSVC_DATABASE_URL"),
    ],
)
def test_production_refuses_insecure_settings(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationError) as caught:
        production(**overrides)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ratelimit_login_ip", "lots"),
        ("ratelimit_anonymous", "5 per fortnight"),
        ("ratelimit_storage_uri", "memcached://x"),
        ("trusted_proxies", "not-an-ip"),
        ("bcrypt_rounds", 3),
        ("password_min_length", 0),
        ("password_max_length", 32),
        ("access_token_lifetime_seconds", 10),
        ("signing_algorithm", "HS256"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, **{field: value})
    assert field in str(caught.value)


def test_secrets_do_not_show_in_repr() -> None:
    settings = production(smtp_password=SecretStr("smtp-pass-123"))
    assert "smtp-pass-123" not in repr(settings)
    assert "k" * 40 not in repr(settings)


def test_trusted_proxies_accept_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_TRUSTED_PROXIES", '["192.168.0.0/24"]')
    assert [str(n) for n in Settings(_env_file=None).trusted_proxies] == ["192.168.0.0/24"]
    monkeypatch.setenv("AUTHSVC_TRUSTED_PROXIES", "[not json")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_empty_environment_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_KEY_ENCRYPTION_KEY", "")
    monkeypatch.setenv("AUTHSVC_SMTP_USERNAME", "")
    settings = Settings(_env_file=None)
    assert settings.key_encryption_key is None and settings.smtp_username is None


def test_an_issuer_counts_as_configured_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """``authsvc serve`` derives the issuer from its bind only when nobody set one."""
    assert not Settings(_env_file=None).issuer_configured
    monkeypatch.setenv("AUTHSVC_ISSUER", "")  # empty means unset
    assert not Settings(_env_file=None).issuer_configured
    monkeypatch.setenv("AUTHSVC_ISSUER", "http://127.0.0.1:8000")  # the default, but chosen
    assert Settings(_env_file=None).issuer_configured
    assert Settings(_env_file=None, issuer="https://auth.example.com").issuer_configured
