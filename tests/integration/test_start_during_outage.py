"""A worker that starts, or is restarted by uvicorn, while PostgreSQL is down comes up anyway.

It serves ``/healthz`` and the JWKS (the keys are on disk), answers ``/readyz`` 503
``DATABASE_UNAVAILABLE`` and refuses what needs the database with the same code, and finishes
its start-up database work (the built-in permissions) in the background once the database is
back, without a restart. ``authsvc serve`` itself, asked to migrate at start, refuses clearly.
Everything is polled with deadlines: nothing depends on the machine being idle.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs import Server, run_cli, serve
from tests.integration.test_server_faults import ROOMY_LIMITS, assert_clean_503, form, log_entries
from tests.servers import PostgresInstance, free_port, postgres_instance

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
DEADLINE = 90.0  # generous: a loaded 2-core machine; the polls end as soon as it is true


def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def _env(pg: PostgresInstance) -> dict[str, str]:
    return {
        "AUTHSVC_DATABASE_URL": pg.url,
        "AUTHSVC_BCRYPT_ROUNDS": "4",
        "AUTHSVC_LOG_FORMAT": "json",
        **ROOMY_LIMITS,
    }


def _migrated_with_admin(pg: PostgresInstance, cwd: Path, env: dict[str, str]) -> None:
    migrated = run_cli(["migrate"], cwd, env)
    assert migrated.returncode == 0, migrated.stderr
    created = run_cli(
        ["create-admin", "--email", ADMIN, "--password-stdin"],
        cwd,
        {**env, "AUTHSVC_MIGRATE_ON_START": "false"},
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0, created.stderr


def _ready(server: Server) -> bool:
    try:
        return httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _all_ready(server: Server) -> bool:
    """Several fresh connections in a row (they land on any worker) all say ready."""
    return all(_ready(server) for _ in range(6))


def _assert_down_but_serving(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200
        jwks = client.get("/.well-known/jwks.json")
        assert jwks.status_code == 200 and jwks.json()["keys"], jwks.text
        assert_clean_503(client.get("/readyz"), "DATABASE_UNAVAILABLE")
        assert_clean_503(
            client.post("/auth/token", data=form(ADMIN)), "DATABASE_UNAVAILABLE", retry_after="5"
        )


def _assert_back(server: Server) -> None:
    until(lambda: _all_ready(server), "/readyz 200 on every worker once PostgreSQL is back")
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        login = client.post("/auth/token", data=form(ADMIN))
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        roles = client.get("/roles", headers=headers)
        assert roles.status_code == 200, roles.text


def _assert_clean_log(server: Server) -> list[dict[str, Any]]:
    entries = log_entries(server)
    assert not [e for e in entries if e["level"] in ("ERROR", "CRITICAL")], [
        e["message"] for e in entries if e["level"] in ("ERROR", "CRITICAL")
    ]
    assert "Traceback" not in server.log()
    assert PASSWORD not in server.log()
    return entries


def test_a_worker_starts_while_the_database_is_down(tmp_path: Path) -> None:
    with postgres_instance() as pg:
        env = _env(pg)
        _migrated_with_admin(pg, tmp_path, env)
        pg.stop()
        serving = {**env, "AUTHSVC_MIGRATE_ON_START": "false"}
        with serve(tmp_path, workers=1, env=serving, ready_path="/healthz") as server:
            _assert_down_but_serving(server)
            assert server.process.poll() is None, server.log()
            pg.start()  # same data, same port; the worker is not restarted
            _assert_back(server)
        entries = _assert_clean_log(server)
    messages = [e["message"] for e in entries]
    assert any("database unreachable at start-up" in m for m in messages), messages
    assert any("start-up database work done" in m for m in messages), messages


def _worker_pids(server: Server) -> list[int]:
    """Worker pids in start order, from uvicorn's "Started server process [pid]" lines."""
    pids = []
    for entry in log_entries(server):
        found = re.fullmatch(r"Started server process \[(\d+)\]", entry["message"])
        if found and int(found.group(1)) != server.process.pid:
            pids.append(int(found.group(1)))
    return pids


def _started_during_outage(server: Server) -> int:
    return sum("database unreachable at start-up" in e["message"] for e in log_entries(server))


def test_a_worker_restarted_during_an_outage_comes_up(tmp_path: Path) -> None:
    """What made the outage test flaky: uvicorn restarts a worker that misses its health
    check (a loaded machine), and the new one used to fail its start-up and exit."""
    with postgres_instance() as pg:
        env = _env(pg)
        _migrated_with_admin(pg, tmp_path, env)
        with serve(tmp_path, workers=2, env=env) as server:
            until(lambda: len(_worker_pids(server)) >= 2, "two workers started")
            pg.stop()
            victim = _worker_pids(server)[0]
            os.kill(victim, signal.SIGKILL)  # the supervisor starts a new worker
            until(lambda: _started_during_outage(server) >= 1, "a new worker up during the outage")
            until(lambda: len(_worker_pids(server)) >= 3, "the new worker's start logged")
            for _ in range(4):  # fresh connections: whichever worker answers
                _assert_down_but_serving(server)
            pg.start()
            _assert_back(server)
        _assert_clean_log(server)


def test_serve_refuses_clearly_when_it_cannot_migrate(tmp_path: Path) -> None:
    """``authsvc serve`` migrates in the parent before any worker (AUTHSVC_MIGRATE_ON_START,
    the default): with the database down it stops at once with one clear line, no traceback."""
    with postgres_instance() as pg:
        env = _env(pg)
        pg.stop()
        started = time.monotonic()
        result = run_cli(["serve", "--port", str(free_port())], tmp_path, env)
        took = time.monotonic() - started
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "error: the database is not reachable" in result.stderr, result.stderr[-3000:]
    assert "AUTHSVC_MIGRATE_ON_START=false" in result.stderr
    assert took < 60, took
