"""The password scheme in the app: new hashes use ``AUTHSVC_PASSWORD_SCHEME`` (Argon2id by
default), and a hash of the other scheme is replaced at the next successful login."""

from __future__ import annotations

from typing import Any

import bcrypt
import httpx
import pytest
from sqlalchemy import select

from authsvc.db.models import User
from authsvc.services.container import AppServices
from tests.conftest import PASSWORD, Login, MakeUser


async def stored_hash(services: AppServices, email: str) -> str:
    async with services.sessionmaker() as db:
        found = await db.scalar(select(User.hashed_password).where(User.email == email))
    assert found is not None
    return found


async def replace_hash(services: AppServices, email: str, hashed: str) -> None:
    async with services.sessionmaker() as db:
        user = await db.scalar(select(User).where(User.email == email))
        assert user is not None
        user.hashed_password = hashed
        await db.commit()


async def test_registration_hashes_with_argon2id(
    client: httpx.AsyncClient, services: AppServices
) -> None:
    created = await client.post("/auth/register", json={"email": "new@example.com",
                                                        "password": PASSWORD})  # fmt: skip
    assert created.status_code == 202, created.text
    assert (await stored_hash(services, "new@example.com")).startswith("$argon2id$")


async def test_a_bcrypt_hash_becomes_argon2id_at_login(
    services: AppServices, make_user: MakeUser, login: Login
) -> None:
    await make_user("old@example.com")
    imported = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # an import
    await replace_hash(services, "old@example.com", imported)
    await login("old@example.com")
    upgraded = await stored_hash(services, "old@example.com")
    assert upgraded.startswith("$argon2id$")
    await login("old@example.com")  # and the new hash works
    assert await stored_hash(services, "old@example.com") == upgraded  # nothing more to do


class TestBcryptScheme:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"password_scheme": "bcrypt"}

    async def test_new_and_upgraded_hashes_are_bcrypt_sha256(
        self, services: AppServices, make_user: MakeUser, login: Login
    ) -> None:
        await make_user("b@example.com")
        assert (await stored_hash(services, "b@example.com")).startswith("$bcrypt-sha256$")
        argon2 = "$argon2id$v=19$m=1024,t=1,p=1$"  # made by the default scheme
        await replace_hash(services, "b@example.com", await _argon2_hash())
        assert (await stored_hash(services, "b@example.com")).startswith(argon2[:10])
        await login("b@example.com")
        assert (await stored_hash(services, "b@example.com")).startswith("$bcrypt-sha256$")


async def _argon2_hash() -> str:
    from authsvc.security.passwords import PasswordHasher

    return await PasswordHasher(argon2_memory_kib=1024, argon2_time_cost=1).hash(PASSWORD)
