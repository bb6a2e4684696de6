"""Real PostgreSQL and Redis servers for the tests, started on free loopback ports.

``bash .ci/install-servers`` installs the Debian packages when they are missing. Set
``AUTHSVC_TEST_POSTGRES_URL`` / ``AUTHSVC_TEST_REDIS_URL`` to use servers you run yourself.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL_HINT = "install the servers with: bash .ci/install-servers"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found and name != "postgres":  # Debian's /usr/bin wrappers lack the server binary
        return found
    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        candidate = Path(bin_dir) / name
        if candidate.is_file():
            return str(candidate)
    return found


def _version(path: str) -> float:
    try:
        return float(Path(path).parent.name)
    except ValueError:
        return 0.0


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within 30 s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no log)"


def stop_process(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """Terminate, then kill if it has not gone within 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """initdb and postgres refuse to run as root: drop to the ``postgres`` account then."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root and there is no 'postgres' user to run PostgreSQL as; " + INSTALL_HINT
        ) from None
    return ["runuser", "-u", "postgres", "--"], account.pw_uid, account.pw_gid


class PostgresInstance:
    """A throw-away PostgreSQL that a test can stop and start again (same data, same port)."""

    def __init__(self) -> None:
        names = ("initdb", "postgres", "psql", "pg_ctl")
        initdb, postgres, psql, pg_ctl = (find_pg_bin(name) for name in names)
        if not (initdb and postgres and psql and pg_ctl):
            raise RuntimeError(f"PostgreSQL server binaries not found; {INSTALL_HINT}")
        self.postgres, self.psql, self.pg_ctl = postgres, psql, pg_ctl
        self.prefix, uid, gid = _as_postgres_user()
        self.root = Path(tempfile.mkdtemp(prefix="authsvc-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        if uid is not None and gid is not None:
            os.chown(self.root, uid, gid)
            self.log.touch()
            os.chown(self.log, uid, gid)
        subprocess.run(
            [*self.prefix, initdb, "-D", str(self.data), "-U", "authsvc", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, cwd=self.root,
        )  # fmt: skip
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"postgresql+asyncpg://authsvc@127.0.0.1:{self.port}/authsvc_test"

    def start(self) -> None:
        with self.log.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [*self.prefix, self.postgres, "-D", str(self.data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.root), "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=100"],
                stdout=log_file, stderr=subprocess.STDOUT, cwd=self.root,
            )  # fmt: skip
        _wait(lambda: _ready(self.psql, self.port), self.proc, "PostgreSQL", self.log)

    def create_database(self) -> None:
        subprocess.run(
            [self.psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "authsvc", "-d",
             "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", "CREATE DATABASE authsvc_test"],
            check=True, capture_output=True,
        )  # fmt: skip

    def stop(self) -> None:
        """A clean, fast shutdown (so the same data directory starts again)."""
        if self.proc is None:
            return
        subprocess.run(
            [*self.prefix, self.pg_ctl, "stop", "-D", str(self.data), "-m", "fast", "-w"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        stop_process(self.proc)
        self.proc = None

    def remove(self) -> None:
        self.stop()
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
        capture_output=True,
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
        raise RuntimeError(f"redis-server not found; {INSTALL_HINT}")
    root = Path(tempfile.mkdtemp(prefix="authsvc-redis-"))
    log = root / "redis.log"
    port = free_port()
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(root)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait(lambda: _redis_ping(port), proc, "Redis", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)
        shutil.rmtree(root, ignore_errors=True)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
