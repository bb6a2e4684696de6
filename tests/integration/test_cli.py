"""``authsvc migrate`` and ``authsvc create-admin`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from authsvc.db.session import create_engine, create_sessionmaker
from authsvc.services.audit import AuditService
from authsvc.services.audit_chain import digest_of
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


# --- authsvc audit verify | export ---------------------------------------------------------


def _record_events(tmp_path: Path, count: int) -> str:
    """Migrate, then add ``count`` audit events as the service would (chained at flush)."""
    url = f"sqlite+aiosqlite:///{(tmp_path / 'audit.db').as_posix()}"
    migrated = run_cli(["migrate"], tmp_path, env={"AUTHSVC_DATABASE_URL": url})
    assert migrated.returncode == 0, migrated.stderr

    _record_events_into(url, count)
    return url


def _record_events_into(url: str, count: int) -> None:
    async def add() -> None:
        engine = create_engine(url)
        try:
            async with create_sessionmaker(engine)() as session:
                for number in range(count):
                    AuditService(session).record("role.create", "role", f"r{number}", None, {})
                    await session.commit()  # one transaction each, as requests do
        finally:
            await engine.dispose()

    asyncio.run(add())


def test_audit_verify_and_export(tmp_path: Path) -> None:
    url = _record_events(tmp_path, 3)
    env = {"AUTHSVC_DATABASE_URL": url}
    verified = run_cli(["audit", "verify"], tmp_path, env=env)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout) == {"intact": True, "events": 3, "first_broken": None}

    exported = run_cli(["audit", "export"], tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert [r["target_id"] for r in records] == ["r0", "r1", "r2"]
    assert all(digest_of(r) == r["digest"] for r in records)
    assert [r["prev_digest"] for r in records[1:]] == [r["digest"] for r in records[:-1]]

    since = records[1]["at"]
    to_file = run_cli(
        ["audit", "export", "--since", since, "--output", "trail.jsonl"], tmp_path, env=env
    )
    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == ""
    lines = (tmp_path / "trail.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [2, 3]


def test_audit_verify_exits_1_on_a_tampered_trail(tmp_path: Path) -> None:
    url = _record_events(tmp_path, 3)
    with sqlite3.connect(tmp_path / "audit.db") as db:
        db.execute("UPDATE audit_events SET target_id = 'forged' WHERE seq = 2")
    result = run_cli(["audit", "verify"], tmp_path, env={"AUTHSVC_DATABASE_URL": url})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["intact"] is False
    assert report["first_broken"]["seq"] == 2
    assert report["first_broken"]["reason"] == "digest_mismatch"


def test_audit_export_refuses_a_bad_since(tmp_path: Path) -> None:
    result = run_cli(["audit", "export", "--since", "yesterday"], tmp_path)
    assert result.returncode == 2
    assert "not an ISO 8601 date-time" in result.stderr
    assert "Traceback" not in result.stderr


def test_migration_0010_chains_the_events_recorded_before_it(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{(tmp_path / 'old.db').as_posix()}"
    env = {"AUTHSVC_DATABASE_URL": url}
    assert run_cli(["migrate", "--revision", "0009"], tmp_path, env=env).returncode == 0
    with sqlite3.connect(tmp_path / "old.db") as db:  # the trail before the chain, out of order
        for event_id, at in [
            ("00000000-0000-4000-8000-000000000002", "2026-01-02 10:00:00.000001"),
            ("00000000-0000-4000-8000-000000000001", "2026-01-01 10:00:00.500000"),
            ("00000000-0000-4000-8000-000000000003", "2026-01-02 10:00:00.000001"),
        ]:
            db.execute(
                "INSERT INTO audit_events (id, at, action, target_type, target_id, after) "
                "VALUES (?, ?, 'role.create', 'role', 'r', '{\"ü\": 1}')",
                (event_id, at),
            )
    assert run_cli(["migrate"], tmp_path, env=env).returncode == 0
    verified = run_cli(["audit", "verify"], tmp_path, env=env)
    assert json.loads(verified.stdout) == {"intact": True, "events": 3, "first_broken": None}
    exported = run_cli(["audit", "export"], tmp_path, env=env).stdout.splitlines()
    assert [json.loads(line)["id"][-1] for line in exported] == ["1", "2", "3"]  # (at, id)
    _record_events_into(url, 1)  # the service goes on from there
    verified = run_cli(["audit", "verify"], tmp_path, env=env)
    assert json.loads(verified.stdout)["events"] == 4
    assert verified.returncode == 0
