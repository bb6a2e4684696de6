"""``authsvc migrate`` and ``authsvc create-admin`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.procs import run_cli, serve

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "a long admin passphrase"


def test_migrate_then_create_admin_from_stdin(tmp_path: Path) -> None:
    migrated = run_cli(["migrate"], tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "head" in migrated.stdout

    created = run_cli(
        ["create-admin", "--email", "root@example.com"], tmp_path, stdin=ADMIN_PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stderr
    assert "root@example.com" in created.stdout
    assert ADMIN_PASSWORD not in created.stdout + created.stderr

    again = run_cli(
        ["create-admin", "--email", "root@example.com"], tmp_path, stdin=ADMIN_PASSWORD + "\n"
    )
    assert again.returncode == 1
    assert "already exists" in again.stderr

    with serve(tmp_path) as server, httpx.Client(base_url=server.base_url) as client:
        token = client.post(
            "/auth/token",
            data={
                "grant_type": "password",
                "username": "root@example.com",
                "password": ADMIN_PASSWORD,
            },
        ).json()["access_token"]
        listing = client.get("/users", headers={"Authorization": f"Bearer {token}"})
        assert listing.status_code == 200
        assert listing.json()["items"][0]["is_superuser"] is True


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("root@example.com", "passwordpassword", "too common"),
        ("root@example.com", "short", "at least 15"),
        ("not-an-email", ADMIN_PASSWORD, "not a valid email"),
    ],
)
def test_create_admin_refuses_bad_input(
    tmp_path: Path, email: str, password: str, message: str
) -> None:
    result = run_cli(["create-admin", "--email", email], tmp_path, stdin=password + "\n")
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_password_is_never_an_argument(tmp_path: Path) -> None:
    result = run_cli(
        ["create-admin", "--email", "a@example.com", "--password", ADMIN_PASSWORD], tmp_path
    )
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr


def test_invalid_settings_are_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(["migrate"], tmp_path, env={"AUTHSVC_ENVIRONMENT": "production"})
    assert result.returncode == 2
    assert "AUTHSVC_TOKEN_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_signing_key_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "authsvc-data"
    data.mkdir()
    (data / "signing-key-RS256.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    result = run_cli(["serve", "--port", "1"], tmp_path)
    assert result.returncode == 2
    assert "signing-key-RS256.pem" in result.stderr
    assert "Traceback" not in result.stderr
