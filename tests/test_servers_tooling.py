"""tests/servers.py: real PostgreSQL and Redis servers start, answer, and are gone afterwards."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis

from tests import servers
from tests.servers import postgres_instance, postgres_server, redis_server


def accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


@pytest.fixture
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AUTHSVC_TEST_POSTGRES_URL", raising=False)
    monkeypatch.delenv("AUTHSVC_TEST_REDIS_URL", raising=False)
    yield


@pytest.mark.integration
@pytest.mark.usefixtures("no_overrides")
async def test_postgres_server_round_trip_then_gone() -> None:
    with postgres_server() as url:
        prefix = "postgresql+asyncpg://authsvc@127.0.0.1:"
        assert url.startswith(prefix) and url.endswith("/authsvc_test"), url
        port = int(url.removeprefix(prefix).split("/")[0])
        conn = await asyncpg.connect(url.replace("+asyncpg", "", 1))
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SELECT current_database()") == "authsvc_test"
            await conn.execute("CREATE TABLE things (id serial PRIMARY KEY, name text NOT NULL)")
            await conn.executemany("INSERT INTO things (name) VALUES ($1)", [("a",), ("b",)])
            rows = await conn.fetch("SELECT id, name FROM things ORDER BY id")
            assert [tuple(row) for row in rows] == [(1, "a"), (2, "b")]
        finally:
            await conn.close()
    assert not accepts_connections(port)
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(url.replace("+asyncpg", "", 1), timeout=5)


@pytest.mark.integration
def test_postgres_leaves_no_processes_or_files() -> None:
    with postgres_instance() as instance:
        assert instance.proc is not None
        proc, root = instance.proc, instance.root
        assert processes_mentioning(str(root)), "the postmaster should show its data directory"
        instance.stop()
        assert not accepts_connections(instance.port)
        instance.start()  # same data, same port
        assert accepts_connections(instance.port)
    assert proc.poll() is not None
    assert not accepts_connections(instance.port)
    assert not root.exists()
    assert processes_mentioning(str(root)) == []


@pytest.mark.integration
@pytest.mark.usefixtures("no_overrides")
def test_redis_server_round_trip_then_gone() -> None:
    with redis_server() as url:
        assert url.startswith("redis://127.0.0.1:") and url.endswith("/0"), url
        port = int(url.removeprefix("redis://127.0.0.1:").split("/")[0])
        with redis.Redis.from_url(url) as client:
            assert client.ping() is True
            assert client.set("greeting", "hello") is True
            assert client.get("greeting") == b"hello"
    assert not accepts_connections(port)
    with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
        with pytest.raises(redis.ConnectionError):
            client.ping()


def test_environment_overrides_start_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHSVC_TEST_POSTGRES_URL", "postgresql+asyncpg://me@db.example/x")
    monkeypatch.setenv("AUTHSVC_TEST_REDIS_URL", "redis://cache.example:6379/3")
    monkeypatch.setattr(servers, "PostgresInstance", None)  # would fail if it were used
    monkeypatch.setattr(subprocess, "Popen", None)
    with postgres_server() as url:
        assert url == "postgresql+asyncpg://me@db.example/x"
    with redis_server() as url:
        assert url == "redis://cache.example:6379/3"


@pytest.mark.usefixtures("no_overrides")
def test_missing_binaries_name_the_install_script(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(servers, "find_pg_bin", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"bash \.ci/install-servers"):
        with postgres_server():
            pass
    with pytest.raises(RuntimeError, match=r"redis-server not found.*bash \.ci/install-servers"):
        with redis_server():
            pass


def test_find_pg_bin_finds_the_server_binaries() -> None:
    for name in ("initdb", "postgres", "psql"):
        found = servers.find_pg_bin(name)
        if found is None:
            pytest.skip(f"{name} is not installed (bash .ci/install-servers)")
        assert os.access(found, os.X_OK)
    assert servers.find_pg_bin("no-such-postgres-binary") is None


def test_root_without_a_postgres_user_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_user(name: str) -> None:
        raise KeyError(name)

    monkeypatch.setattr(servers, "find_pg_bin", lambda name: "/bin/true")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(pwd, "getpwnam", no_such_user)
    with pytest.raises(RuntimeError, match=r"no 'postgres' user.*bash \.ci/install-servers"):
        servers.PostgresInstance()
