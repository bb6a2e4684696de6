"""Key rotation through the API: old tokens keep verifying, new ones use the new key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import Login, MakeUser


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    # The key store in the data directory (not the one-file test key), activating at once;
    # this test's own directory, since rotations stay on disk (and so its own app).
    return {"data_dir": tmp_path, "signing_key_file": None, "key_activation_delay_seconds": 0}


async def test_rotate_and_keep_verifying(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login, admin_headers: dict[str, str]
) -> None:
    await make_user("k@example.com")
    before = await login("k@example.com")
    old_kid = jwt.get_unverified_header(before["Authorization"][7:])["kid"]

    rotated = await client.post("/keys/rotate", headers=admin_headers)
    assert rotated.status_code == 201
    new_kid = rotated.json()["kid"]
    assert new_kid != old_kid and rotated.json()["active"] is True

    listed = (await client.get("/keys", headers=admin_headers)).json()
    assert [k["kid"] for k in listed] == [new_kid, old_kid]
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {new_kid, old_kid}

    assert (await client.get("/users/me", headers=before)).status_code == 200
    after = await login("k@example.com")
    assert jwt.get_unverified_header(after["Authorization"][7:])["kid"] == new_kid
    audit = (await client.get("/audit?action=key.rotate", headers=admin_headers)).json()
    assert audit["total"] == 1


async def test_rotation_needs_keys_write(
    client: httpx.AsyncClient, make_user: MakeUser, login: Login
) -> None:
    await make_user("nokeys@example.com")
    headers = await login("nokeys@example.com")
    assert (await client.post("/keys/rotate", headers=headers)).status_code == 403
    assert (await client.get("/keys", headers=headers)).status_code == 403


class TestOneKeyFile:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {}

    async def test_a_single_key_file_cannot_rotate(
        self, client: httpx.AsyncClient, admin_headers: dict[str, str]
    ) -> None:
        response = await client.post("/keys/rotate", headers=admin_headers)
        assert response.status_code == 409
        assert response.json()["detail"]["code"] == "KEYS_NOT_ROTATABLE"
