"""Real PostgreSQL and Redis servers for the tests, started on free loopback ports.

``bash .ci/install-servers`` installs the Debian packages when they are missing. Set
``AUTHSVC_TEST_POSTGRES_URL`` / ``AUTHSVC_TEST_REDIS_URL`` to use servers you run yourself.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

INSTALL_HINT = "install the servers with: bash .ci/install-servers"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_pg_bin(name: str) -> str | None:
    """``name`` on PATH, else in the newest ``/usr/lib/postgresql/<version>/bin`` (Debian)."""
    found = shutil.which(name)
    if found:
        return found
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        candidate = Path(bin_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _version(path: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in Path(path).parent.name.split("."))
    except ValueError:
        return ()


def _pg_bins(*names: str) -> list[str]:
    """Binaries of one installation: the rest are taken from the first one's folder if there."""
    first = find_pg_bin(names[0])
    found = [first]
    for name in names[1:]:
        sibling = Path(first).parent / name if first else None
        found.append(str(sibling) if sibling and sibling.is_file() else find_pg_bin(name))
    missing = [name for name, path in zip(names, found, strict=True) if path is None]
    if missing:
        raise RuntimeError(
            f"PostgreSQL binaries not found ({', '.join(missing)}; looked on PATH and in "
            f"/usr/lib/postgresql/*/bin); {INSTALL_HINT}"
        )
    return [path for path in found if path is not None]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(
    check: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    what: str,
    log: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; its log:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:g} s; its log:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no log)"


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    first: signal.Signals = signal.SIGTERM,
    timeout: float = 15,
) -> None:
    """Send ``first`` (SIGTERM), then SIGKILL if the process has not gone within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(first)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class _Account(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _postgres_account() -> _Account:
    """initdb and postgres refuse to run as root: as root, run them as the ``postgres`` user.

    The processes are started with setuid/setgid (no ``runuser`` in between), so killing the
    process we started kills the server itself.
    """
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root and there is no 'postgres' user to run PostgreSQL as (initdb and "
            "postgres refuse to run as root); run the tests as another user, or " + INSTALL_HINT
        ) from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


class PostgresInstance:
    """A throw-away PostgreSQL that a test can stop and start again (same data, same port)."""

    def __init__(self) -> None:
        initdb, self.postgres, self.psql = _pg_bins("initdb", "postgres", "psql")
        self.account = _postgres_account()
        self.root = Path(tempfile.mkdtemp(prefix="authsvc-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            if self.account:
                os.chown(self.root, self.account["user"], self.account["group"])
            result = subprocess.run(
                [initdb, "-D", str(self.data), "-U", "authsvc", "--auth=trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions"],
                capture_output=True, cwd=self.root, timeout=120, **self.account,
            )  # fmt: skip
            if result.returncode != 0:
                output = (result.stdout + result.stderr).decode(errors="replace")
                raise RuntimeError(f"initdb failed ({result.returncode}):\n{output}")
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.port = free_port()
        self.url = f"postgresql+asyncpg://authsvc@127.0.0.1:{self.port}/authsvc_test"

    def start(self) -> None:
        with self.log.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [self.postgres, "-D", str(self.data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.root), "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=100"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=self.root, **self.account,
            )  # fmt: skip
        _wait(lambda: _ready(self.psql, self.port), self.proc, "PostgreSQL", self.log, 30)

    def create_database(self) -> None:
        result = subprocess.run(
            [self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "authsvc", "-d",
             "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", "CREATE DATABASE authsvc_test"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"CREATE DATABASE authsvc_test failed:\n{output}")

    def stop(self) -> None:
        """A clean, fast shutdown (so the same data directory starts again); SIGKILL after 30 s.

        SIGINT is PostgreSQL's "fast" shutdown, what ``pg_ctl stop -m fast`` sends.
        """
        if self.proc is None:
            return
        try:
            stop_process(self.proc, first=signal.SIGINT, timeout=30)
        finally:
            self.proc = None

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_instance() -> Iterator[PostgresInstance]:
    instance = PostgresInstance()
    try:
        instance.start()
        instance.create_database()
        yield instance
    finally:
        instance.remove()


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a SQLAlchemy URL (asyncpg) of a fresh, empty database on a throw-away server."""
    override = os.environ.get("AUTHSVC_TEST_POSTGRES_URL")
    if override:
        yield override
        return
    with postgres_instance() as instance:
        yield instance.url


def _ready(psql: str, port: int) -> bool:
    if not _port_open(port):
        return False
    result = subprocess.run(
        [psql, "-h", "127.0.0.1", "-p", str(port), "-U", "authsvc", "-d", "postgres",
         "-tAc", "SELECT 1"],
        capture_output=True, timeout=10,
    )  # fmt: skip
    return result.returncode == 0


@contextmanager
def redis_server() -> Iterator[str]:
    """Yield the URL of a throw-away Redis server (no persistence)."""
    override = os.environ.get("AUTHSVC_TEST_REDIS_URL")
    if override:
        yield override
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"redis-server not found on PATH; {INSTALL_HINT}")
    root = Path(tempfile.mkdtemp(prefix="authsvc-redis-"))
    log = root / "redis.log"
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(root)],
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait(lambda: _redis_ping(port), proc, "Redis", log, 15)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
