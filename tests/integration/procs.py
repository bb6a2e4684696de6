"""Start ``authsvc`` as a real process (uvicorn on 127.0.0.1) and stop it reliably."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port, stop_process


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without any AUTHSVC_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}
    env.update(extra or {})
    return env


def run_cli(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authsvc.cli", *args],
        cwd=cwd,
        env=clean_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def serve(
    cwd: Path,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/readyz",
) -> Iterator[Server]:
    """Start ``authsvc serve`` and wait until ``ready_path`` answers 200 (``/healthz``: the
    process is up, even while the database is not)."""
    port = free_port()
    # The issuer is where the server really is, so verifiers can discover its keys.
    env = {
        "AUTHSVC_ISSUER": f"http://127.0.0.1:{port}",
        **(env or {}),
    }
    log_path = cwd / f"server-{port}.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "authsvc.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            cwd=cwd,
            env=clean_env(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server, ready_path)
        yield server
    finally:
        stop_process(process)


def _wait_ready(server: Server, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"authsvc exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"authsvc: {path} not 200 within {timeout} s:\n{server.log()}")
