"""PasswordHasher: bcrypt_sha256 through passlib, in worker threads, with a concurrency cap."""

from __future__ import annotations

import threading

import anyio
import bcrypt
import pytest

from authsvc.security.passwords import PasswordHasher

SECRET = "correct horse battery staple"


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(rounds=4, max_concurrency=2)


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

    weak = await PasswordHasher(rounds=4).hash(SECRET)
    stronger = PasswordHasher(rounds=5)
    verified, upgraded = await stronger.verify_and_update(SECRET, weak)
    assert verified and upgraded is not None and not stronger.needs_update(upgraded)

    current = await hasher.hash(SECRET)
    assert await hasher.verify_and_update(SECRET, current) == (True, None)


@pytest.mark.parametrize("stored", ["", "not a hash", "$2b$04$short", "$bcrypt-sha256$garbage"])
async def test_corrupt_stored_hashes_never_verify(hasher: PasswordHasher, stored: str) -> None:
    assert await hasher.verify_and_update(SECRET, stored) == (False, None)


async def test_dummy_verify_does_real_work(hasher: PasswordHasher) -> None:
    await hasher.dummy_verify(SECRET)
    assert hasher.worker_threads  # it ran a real bcrypt verification in a worker


async def test_hashing_never_runs_on_the_event_loop_thread() -> None:
    hasher = PasswordHasher(rounds=4, max_concurrency=2)
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
