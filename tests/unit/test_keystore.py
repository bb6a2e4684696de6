"""Key rotation on disk: publish first, sign later, retire after the last token; encryption."""

from __future__ import annotations

from pathlib import Path

import pytest

from authsvc.security.keys import KeyLoadError, KeyRing, generate_private_pem
from authsvc.security.keystore import RETIRE_MARGIN_SECONDS, KeyStore


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store(tmp_path: Path, clock: Clock, **kwargs: object) -> KeyStore:
    defaults: dict[str, object] = {"token_lifetime_seconds": 900, "activation_delay_seconds": 60}
    defaults.update(kwargs)
    return KeyStore(tmp_path / "keys", "ES256", clock=clock, **defaults)  # type: ignore[arg-type]


def test_first_key_is_created_once_and_active(tmp_path: Path) -> None:
    clock = Clock()
    keystore = store(tmp_path, clock)
    keystore.ensure()
    keystore.ensure()
    (only,) = keystore.load()
    assert only.activates_at == 0
    assert (tmp_path / "keys").stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "keys").iterdir())


def test_rotation_publishes_first_signs_later_and_retires(tmp_path: Path) -> None:
    clock = Clock()
    keystore = store(tmp_path, clock)
    keystore.ensure()
    ring = KeyRing(keystore.load(), loader=keystore.load, reload_seconds=0, clock=clock)
    old = ring.active
    new = keystore.rotate()
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, new.kid}  # published at once
    assert ring.active.kid == old.kid  # ...but not signing yet
    clock.now += 60
    assert ring.active.kid == new.kid
    clock.now += 900 + RETIRE_MARGIN_SECONDS - 1
    assert ring.get(old.kid) is not None  # its last tokens may still be alive
    clock.now += 2
    assert ring.get(old.kid) is None and [k["kid"] for k in ring.jwks()["keys"]] == [new.kid]
    keystore.rotate()  # deletes retired files
    assert len(list((tmp_path / "keys").glob("*.pem"))) == 2


def test_two_rotations_in_one_second_get_distinct_files(tmp_path: Path) -> None:
    keystore = store(tmp_path, Clock())
    keystore.ensure()
    first, second = keystore.rotate(), keystore.rotate()
    assert first.kid != second.kid and second.activates_at == first.activates_at + 1


def test_legacy_key_file_is_imported(tmp_path: Path) -> None:
    legacy = tmp_path / "signing-key-ES256.pem"
    legacy.write_bytes(generate_private_pem("ES256"))
    keystore = store(tmp_path, Clock())
    keystore.ensure(legacy_file=legacy)
    from authsvc.security.keys import signing_key_from_pem

    assert keystore.load()[0].kid == signing_key_from_pem(legacy.read_bytes(), "ES256").kid


def test_keys_are_encrypted_at_rest_with_a_kek(tmp_path: Path) -> None:
    keystore = store(tmp_path, Clock(), kek=b"correct horse battery staple kek")
    keystore.ensure()
    keystore.rotate()
    for path in (tmp_path / "keys").glob("*.pem"):
        assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert len(keystore.load()) == 2
    with pytest.raises(KeyLoadError, match="AUTHSVC_KEY_ENCRYPTION_KEY"):
        store(tmp_path, Clock()).load()
    with pytest.raises(KeyLoadError, match="wrong"):
        store(tmp_path, Clock(), kek=b"another kek").load()


def test_an_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    with pytest.raises(KeyLoadError, match="no signing keys"):
        store(tmp_path, Clock()).load()


def test_a_bad_file_in_the_folder_does_not_take_the_ring_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    keystore = store(tmp_path, clock)
    keystore.ensure()
    ring = KeyRing(keystore.load(), loader=keystore.load, reload_seconds=0, clock=clock)
    kid = ring.active.kid
    (tmp_path / "keys" / "000000000005-ES256.pem").write_text("garbage")
    assert ring.active.kid == kid  # still serving with what it had
    assert "cannot reload" in caplog.text
