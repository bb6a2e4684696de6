"""PasswordHasher: Argon2id (or bcrypt_sha256) through passlib, in worker threads, with a
concurrency cap; hashes of the other scheme verify and are upgraded at the next login."""

from __future__ import annotations

import threading

import anyio
import bcrypt
import pytest

from authsvc.security.passwords import PasswordHasher

SECRET = "correct horse battery staple"


# Argon2id at a test-sized cost: the parameters are what is checked, not the cost.
CHEAP_ARGON2 = {"argon2_memory_kib": 1024, "argon2_time_cost": 1}


@pytest.fixture
def hasher() -> PasswordHasher:
    """The bcrypt scheme (``AUTHSVC_PASSWORD_SCHEME=bcrypt``)."""
    return PasswordHasher(scheme="bcrypt", rounds=4, max_concurrency=2)


def _argon2_parameters(hashed: str) -> dict[str, str]:
    # $argon2id$v=19$m=19456,t=2,p=1$salt$hash
    _, variant, _version, params, _salt, _digest = hashed.split("$")
    return {"variant": variant, **dict(p.split("=") for p in params.split(","))}


async def test_argon2id_with_owasp_parameters_is_the_default() -> None:
    """OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1."""
    hasher = PasswordHasher()
    hashed = await hasher.hash(SECRET)
    assert _argon2_parameters(hashed) == {"variant": "argon2id", "m": "19456", "t": "2", "p": "1"}
    assert await hasher.verify(SECRET, hashed)
    assert not await hasher.verify(SECRET + "!", hashed)
    assert await hasher.verify_and_update(SECRET, hashed) == (True, None)


async def test_bcrypt_hashes_are_upgraded_to_argon2id_and_back_by_setting() -> None:
    argon2 = PasswordHasher(**CHEAP_ARGON2)
    for legacy in (
        bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode(),  # imported plain bcrypt
        await PasswordHasher(scheme="bcrypt", rounds=4).hash(SECRET),  # bcrypt_sha256
    ):
        verified, new_hash = await argon2.verify_and_update(SECRET, legacy)
        assert verified and new_hash is not None
        assert _argon2_parameters(new_hash)["variant"] == "argon2id"
        assert not argon2.needs_update(new_hash)
        assert await argon2.verify_and_update("wrong", legacy) == (False, None)
    # Switching the setting back to bcrypt upgrades the other way at the next login.
    back = PasswordHasher(scheme="bcrypt", rounds=4)
    verified, new_hash = await back.verify_and_update(SECRET, await argon2.hash(SECRET))
    assert verified and new_hash is not None and new_hash.startswith("$bcrypt-sha256$")


async def test_stronger_argon2_settings_upgrade_weaker_hashes() -> None:
    weak = await PasswordHasher(**CHEAP_ARGON2).hash(SECRET)
    stronger = PasswordHasher(argon2_memory_kib=2048, argon2_time_cost=2)
    verified, upgraded = await stronger.verify_and_update(SECRET, weak)
    assert verified and upgraded is not None
    assert _argon2_parameters(upgraded)["m"] == "2048" and not stronger.needs_update(upgraded)


async def test_a_long_password_is_never_truncated_by_plain_bcrypt() -> None:
    """A plain bcrypt hash (an import) only sees 72 bytes: a longer password must not pass
    because its first 72 bytes match; it is refused, never silently cut."""
    first72 = "x" * 72
    legacy = bcrypt.hashpw(first72.encode(), bcrypt.gensalt(4)).decode()
    for hasher in (PasswordHasher(**CHEAP_ARGON2), PasswordHasher(scheme="bcrypt", rounds=4)):
        assert await hasher.verify(first72, legacy)
        assert not await hasher.verify(first72 + "anything", legacy)


async def test_hash_and_verify(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(SECRET)
    assert hashed.startswith("$bcrypt-sha256$")
    assert SECRET not in hashed
    assert await hasher.verify(SECRET, hashed)
    assert not await hasher.verify(SECRET + "!", hashed)


async def test_no_truncation_at_72_bytes(hasher: PasswordHasher) -> None:
    base = "é" * 40  # 80 bytes in UTF-8
    hashed = await hasher.hash(base + "one")
    assert await hasher.verify(base + "one", hashed)
    assert not await hasher.verify(base + "two", hashed)


async def test_plain_bcrypt_and_weaker_hashes_are_upgraded(hasher: PasswordHasher) -> None:
    legacy = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode()
    verified, new_hash = await hasher.verify_and_update(SECRET, legacy)
    assert verified and new_hash is not None and new_hash.startswith("$bcrypt-sha256$")

    weak = await PasswordHasher(scheme="bcrypt", rounds=4).hash(SECRET)
    stronger = PasswordHasher(scheme="bcrypt", rounds=5)
    verified, upgraded = await stronger.verify_and_update(SECRET, weak)
    assert verified and upgraded is not None and not stronger.needs_update(upgraded)

    current = await hasher.hash(SECRET)
    assert await hasher.verify_and_update(SECRET, current) == (True, None)


@pytest.mark.parametrize(
    "stored", ["", "not a hash", "$2b$04$short", "$bcrypt-sha256$garbage", "$argon2id$v=19$m=1"]
)
async def test_corrupt_stored_hashes_never_verify(hasher: PasswordHasher, stored: str) -> None:
    assert await hasher.verify_and_update(SECRET, stored) == (False, None)


async def test_dummy_verify_does_real_work(hasher: PasswordHasher) -> None:
    await hasher.dummy_verify(SECRET)
    assert hasher.worker_threads  # it ran a real bcrypt verification in a worker


async def test_hashing_never_runs_on_the_event_loop_thread() -> None:
    hasher = PasswordHasher(max_concurrency=2, **CHEAP_ARGON2)
    loop_thread = threading.get_ident()
    hashed = await hasher.hash(SECRET)
    await hasher.verify(SECRET, hashed)
    await hasher.verify_and_update("wrong", hashed)
    await hasher.dummy_verify(SECRET)
    assert hasher.worker_threads
    assert loop_thread not in hasher.worker_threads


async def test_concurrency_is_capped() -> None:
    hasher = PasswordHasher(rounds=8, max_concurrency=2)
    async with anyio.create_task_group() as group:
        for i in range(8):
            group.start_soon(hasher.hash, f"{SECRET}{i}")
    assert 1 <= hasher.peak_in_flight <= 2
    assert hasher.in_flight == 0

    single = PasswordHasher(rounds=8, max_concurrency=1)
    async with anyio.create_task_group() as group:
        for i in range(4):
            group.start_soon(single.hash, f"{SECRET}{i}")
    assert single.peak_in_flight == 1
