"""The pure parts of second factors: TOTP against RFC 6238 and an independent reference, the
secret box, recovery codes and the mfa_token codec."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from authsvc.security import recovery_codes, totp
from authsvc.security.mfa_tokens import MfaTokenCodec
from authsvc.security.secretbox import Keys, SecretBox, SecretUnreadable

# RFC 6238 Appendix B: the SHA-1 seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [  # (Unix time, 8-digit TOTP, SHA-1)
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


def reference_totp(secret_b32: str, unix_time: int, digits: int = 6) -> str:
    """RFC 4226 §5.3 / RFC 6238 §4, written from the RFCs, independent of pyotp."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = struct.pack(">Q", unix_time // 30)
    mac = hmac.new(key, counter, hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def at(unix_time: int) -> datetime:
    return datetime.fromtimestamp(unix_time, UTC)


@pytest.mark.parametrize(("unix_time", "expected"), RFC_VECTORS)
def test_rfc_6238_appendix_b_vectors(unix_time: int, expected: str) -> None:
    assert reference_totp(RFC_SECRET, unix_time, digits=8) == expected
    # A 6-digit code is the 8-digit value mod 10^6: its last six digits.
    assert totp.code_at(RFC_SECRET, totp.step_at(at(unix_time))) == expected[-6:]


def test_codes_match_the_reference_for_random_secrets() -> None:
    for _ in range(20):
        secret = totp.new_secret()
        for unix_time in (0, 29, 30, 1_700_000_000, 4_102_444_800):
            assert totp.code_at(secret, unix_time // 30) == reference_totp(secret, unix_time)


def test_new_secret_has_160_bits() -> None:
    secret = totp.new_secret()
    assert len(base64.b32decode(secret)) == 20


def test_verification_allows_one_step_of_drift_and_names_the_step() -> None:
    secret = totp.new_secret()
    now = 1_700_000_015
    step = now // 30
    assert totp.matching_step(secret, reference_totp(secret, now), at(now)) == step
    assert totp.matching_step(secret, reference_totp(secret, now - 30), at(now)) == step - 1
    assert totp.matching_step(secret, reference_totp(secret, now + 30), at(now)) == step + 1
    assert totp.matching_step(secret, reference_totp(secret, now - 60), at(now)) is None
    assert totp.matching_step(secret, reference_totp(secret, now + 60), at(now)) is None
    assert totp.matching_step(secret, "12345", at(now)) is None


def test_provisioning_uri_and_qr_code() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "ann@example.com", "authsvc test")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/authsvc%20test:ann%40example.com"
    query = parse_qs(parts.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["authsvc test"]
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "script" not in svg.lower() and "href" not in svg.lower()


def test_secret_box_round_trip_bound_to_its_owner() -> None:
    box = SecretBox(Keys.from_secrets(None, "t" * 40))
    owner, other = uuid.uuid4().bytes, uuid.uuid4().bytes
    sealed = box.seal("JBSWY3DPEHPK3PXP", owner)
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert sealed != box.seal("JBSWY3DPEHPK3PXP", owner)  # a fresh nonce each time
    assert box.open(sealed, owner) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(SecretUnreadable):
        box.open(sealed, other)
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SecretUnreadable):
        box.open(tampered, owner)
    with pytest.raises(SecretUnreadable):
        box.open("nonsense", owner)


def test_a_key_encryption_key_set_later_keeps_old_secrets_readable() -> None:
    owner = uuid.uuid4().bytes
    before = SecretBox(Keys.from_secrets(None, "t" * 40)).seal("S", owner)
    after = SecretBox(Keys.from_secrets("k" * 40, "t" * 40))
    assert after.open(before, owner) == "S"
    sealed_now = after.seal("S", owner)
    with pytest.raises(SecretUnreadable):  # written under the key-encryption key
        SecretBox(Keys.from_secrets(None, "t" * 40)).open(sealed_now, owner)
    with pytest.raises(SecretUnreadable):  # another root altogether
        SecretBox(Keys.from_secrets(None, "u" * 40)).open(before, owner)


def test_recovery_codes_format_entropy_and_normalization() -> None:
    codes = recovery_codes.new_set()
    assert len(codes) == 10 and len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", code)  # 16 x 5 bits = 80 bits
    code = codes[0]
    plain = code.replace("-", "")
    spellings = (code, code.upper(), plain, f" {plain[:8]} {plain[8:]} ", code.replace("-", " - "))
    for spelling in spellings:
        assert recovery_codes.normalize(spelling) == plain
    for bad in ("", "123456", plain[:-1], plain + "a", plain[:-1] + "1", plain[:-1] + "!"):
        assert recovery_codes.normalize(bad) is None


def test_recovery_code_hash_is_keyed_and_spelling_blind() -> None:
    keys = Keys.from_secrets(None, "t" * 40)
    hasher = recovery_codes.RecoveryHasher(keys)
    code = recovery_codes.new_code()
    stored = hasher.hash(code)
    assert len(stored) == 64 and code.replace("-", "") not in stored
    assert hasher.hash(code.upper().replace("-", " ")) == stored
    assert stored in hasher.candidates(code.replace("-", ""))
    other = recovery_codes.RecoveryHasher(Keys.from_secrets(None, "u" * 40))
    assert other.hash(code) != stored
    assert hashlib.sha256(code.replace("-", "").encode()).hexdigest() != stored  # keyed


def test_mfa_token_codec() -> None:
    codec = MfaTokenCodec("t" * 40)
    challenge = uuid.uuid4()
    token = codec.issue(challenge)
    assert codec.read(token) == challenge
    assert MfaTokenCodec("u" * 40).read(token) is None
    for bad in ("", token + "x", token[:-1], "m1." + challenge.hex, "x" * 500, "é." * 10):
        assert codec.read(bad) is None
    assert token.count(".") == 2  # not a JWT: no access-token verifier takes it


def test_step_at_uses_utc_seconds() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    assert totp.step_at(moment) == int(moment.timestamp()) // 30
    assert totp.step_at(moment + timedelta(seconds=29)) == totp.step_at(moment)
