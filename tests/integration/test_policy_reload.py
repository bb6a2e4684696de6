"""Policies across real processes: refusing to start, reload by HTTP and by SIGHUP, and every
worker of ``authsvc serve --workers 2`` following a reload made through one of them."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.integration.procs import run_cli, serve

pytestmark = pytest.mark.integration

POLICIES = Path(__file__).resolve().parents[2] / "policies"
PASSWORD = "a long admin passphrase"
EXTRA = '@id("extra.{name}")\npermit (principal, action == Action::"audit:read", resource)\nwhen {{ principal.email == "{name}@example.com" }};\n'  # noqa: E501


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    env = {"AUTHSVC_POLICIES_DIR": str(policies)}
    created = run_cli(
        ["create-admin", "--email", "root@example.com"], tmp_path, env, stdin=PASSWORD + "\n"
    )
    assert created.returncode == 0, created.stderr
    return policies, env


def _token(base_url: str) -> dict[str, str]:
    response = httpx.post(
        f"{base_url}/auth/token",
        data={"grant_type": "password", "username": "root@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _status(base_url: str, headers: dict[str, str]) -> dict[str, object]:
    # A new connection each time, so that the kernel may hand it to either worker.
    with httpx.Client(base_url=base_url, headers={"Connection": "close"}) as client:
        response = client.get("/authz/policies", headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def _digests_by_worker(base_url: str, headers: dict[str, str], rounds: int) -> dict[int, str]:
    seen: dict[int, str] = {}
    for _ in range(rounds):
        status = _status(base_url, headers)
        seen[int(str(status["worker_pid"]))] = str(status["digest"])
    return seen


def test_two_workers_follow_a_reload_made_through_one(tmp_path: Path) -> None:
    policies, env = _setup(tmp_path)
    with serve(tmp_path, workers=2, env=env) as server:
        headers = _token(server.base_url)
        workers: dict[int, str] = {}

        def both_seen() -> bool:
            workers.update(_digests_by_worker(server.base_url, headers, 10))
            return len(workers) == 2

        _until(both_seen, "answers from both workers")
        assert len(set(workers.values())) == 1
        old = next(iter(workers.values()))

        # 1. By HTTP: one worker reloads, the other follows from the marker file.
        (policies / "extra.cedar").write_text(EXTRA.format(name="first"))
        reloaded = httpx.post(f"{server.base_url}/authz/policies/reload", headers=headers)
        assert reloaded.status_code == 200, reloaded.text
        new = reloaded.json()["digest"]
        assert new != old

        def all_on(digest: str) -> Callable[[], bool]:
            def check() -> bool:
                seen = _digests_by_worker(server.base_url, headers, 10)
                workers.update(seen)
                return set(seen.values()) == {digest} and all(v == digest for v in workers.values())

            return check

        _until(all_on(new), "both workers on the reloaded set")

        # 2. By SIGHUP to one worker: the other follows too.
        (policies / "extra.cedar").write_text(EXTRA.format(name="second"))
        os.kill(next(iter(workers)), signal.SIGHUP)
        answers: list[str] = []

        def reloaded_somewhere() -> bool:
            answers.append(str(_status(server.base_url, headers)["digest"]))
            return answers[-1] != new

        _until(reloaded_somewhere, "a SIGHUP reload")
        newest = answers[-1]
        _until(all_on(newest), "both workers on the SIGHUP-reloaded set")
        ids = {p["id"] for p in _status(server.base_url, headers)["policies"]}  # type: ignore[attr-defined]
        assert "extra.second" in ids and "extra.first" not in ids

        # 3. A broken edit: refused everywhere, the set in force stays, the workers live on.
        (policies / "extra.cedar").write_text('@id("extra.broken")\npermit (principal, action')
        refused = httpx.post(f"{server.base_url}/authz/policies/reload", headers=headers)
        assert refused.status_code == 422
        assert refused.json()["detail"]["problems"][0]["file"] == "extra.cedar"
        refusals = server.log().count("policy reload refused")
        for pid in workers:
            os.kill(pid, signal.SIGHUP)
        # Each worker has taken its SIGHUP (and refused the set) before anything is checked.
        _until(
            lambda: server.log().count("policy reload refused") >= refusals + len(workers),
            "both workers refusing the broken set on SIGHUP",
        )
        assert set(_digests_by_worker(server.base_url, headers, 10).values()) == {newest}
        assert server.process.poll() is None
    log = server.log()
    assert "policy reload refused" in log
    assert PASSWORD not in log


def test_invalid_policies_stop_the_start_naming_file_and_id(tmp_path: Path) -> None:
    policies, env = _setup(tmp_path)
    (policies / "users.cedar").write_text(
        (policies / "users.cedar").read_text() + '\n@id("users.typo")\n'
        'permit (principal, action == Action::"users:read", resource)\n'
        'when { principal.departmnet == "x" };\n'
    )
    checked = run_cli(["policies", "check"], tmp_path, env)
    assert checked.returncode == 2
    assert "users.cedar: policy 'users.typo'" in checked.stderr
    served = run_cli(["serve", "--port", "1"], tmp_path, env)
    assert served.returncode == 2
    assert "users.cedar: policy 'users.typo'" in served.stderr
    assert "departmnet" in served.stderr
