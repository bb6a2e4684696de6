"""The password policy: length bounds, no composition rules, common passwords refused."""

from __future__ import annotations

from importlib import resources

import pytest

from authsvc.security.password_policy import PasswordPolicy, load_common_passwords


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy(min_length=8, max_length=128, common_passwords=load_common_passwords())


def test_the_shipped_list_loads_with_its_licence() -> None:
    common = load_common_passwords()
    assert len(common) > 19_000
    assert {"password", "12345678", "qwertyuiop"} <= common
    data = resources.files("authsvc.security") / "data"
    licence = (data / "LICENSE-common-passwords.txt").read_text()
    assert "Django Software Foundation" in licence and "Redistribution" in licence


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "at least 8"),
        ("seven77", "at least 8"),
        ("x" * 129, "at most 128"),
        ("password", "too common"),
        ("PassWord", "too common"),
        ("12345678", "too common"),
        ("qwertyuiop", "too common"),
        ("          ", "whitespace"),
    ],
)
def test_refused(policy: PasswordPolicy, password: str, reason: str) -> None:
    result = policy.check(password)
    assert result is not None and reason in result


@pytest.mark.parametrize(
    "password",
    [
        "tangerine orbit",  # lower case and a space: no composition rules
        "q" * 64,
        "\u5bc6\u7801\u5bc6\u7801\u5bc6\u7801\u5bc6\u7801",  # 8 CJK characters
        "x" * 128,
    ],
)
def test_accepted(policy: PasswordPolicy, password: str) -> None:
    assert policy.check(password) is None


def test_the_email_is_not_a_password(policy: PasswordPolicy) -> None:
    assert policy.check("alice.smith@example.com", email="Alice.Smith@example.com") is not None
    assert policy.check("alice.smith", email="alice.smith@example.com") is not None
    assert policy.check("alice.smith", email="bob@example.com") is None


def test_length_counts_characters_not_bytes() -> None:
    policy = PasswordPolicy(min_length=8, max_length=64)
    assert policy.check("\u00e9" * 64) is None  # 128 bytes in UTF-8, 64 characters
    # Eight code points, but four characters once composed (NFKC): too short.
    assert policy.check("e\u0301" * 4) is not None
    assert policy.check("e\u0301" * 8) is None
    assert policy.check("\u00e9" * 7) is not None


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        PasswordPolicy(min_length=8, max_length=63)
    with pytest.raises(ValueError):
        PasswordPolicy(min_length=0, max_length=128)
    with pytest.raises(ValueError):
        PasswordPolicy(min_length=100, max_length=64)
