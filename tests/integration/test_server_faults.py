"""Outages and shutdown under a real ``authsvc serve`` process (uvicorn, real sockets).

``test_faults.py`` stops PostgreSQL and Redis under an in-process app; here the same happens
under the server as it runs in production: the answers during the outage (503 with a stable
code, never a 500 or a stack trace), what the log says, and the recovery once the backend is
back, without restarting the server and without losing anything acknowledged before. Last,
SIGTERM: requests in flight are answered before the process exits.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.procs import Server, run_cli, serve
from tests.servers import PostgresInstance, free_port, postgres_instance, stop_process

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
WRONG_PASSWORD = "not the right password"
# Generous limits, so the outage tests only ever meet the limit they are about.
ROOMY_LIMITS = {
    "AUTHSVC_RATELIMIT_REGISTER_IP": "1000/hour",
    "AUTHSVC_RATELIMIT_LOGIN_IP": "1000/minute",
    "AUTHSVC_RATELIMIT_LOGIN_USERNAME": "1000/minute",
    "AUTHSVC_RATELIMIT_ANONYMOUS": "10000/minute",
    "AUTHSVC_RATELIMIT_AUTHENTICATED": "10000/minute",
}
# These tests register users and sign them in; verifying the address is not what they are
# about (tests/api/test_register.py is), so registration answers 201 and needs no mailbox.
NO_VERIFICATION = {"AUTHSVC_REQUIRE_VERIFIED_EMAIL": "false"}


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Poll ``condition`` until true; return how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def form(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"grant_type": "password", "username": email, "password": password}


def log_entries(server: Server) -> list[dict[str, Any]]:
    """The server's JSON log lines (AUTHSVC_LOG_FORMAT=json); anything else is a failure,
    but for the messages the development notifier prints to the same stdout (registration
    mails a verification token)."""
    entries = []
    text = re.sub(r"^--- mail to .*? ---\n.*?^---\n", "", server.log(), flags=re.S | re.M)
    for line in text.splitlines():
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"a log line that is not JSON: {line!r}") from None
    return entries


def assert_clean_503(response: httpx.Response, code: str, retry_after: str | None = None) -> None:
    """503 with the stable code and nothing else: no exception text, no stack trace."""
    assert response.status_code == 503, (response.request.url, response.text)
    body = response.json()
    assert body == {"detail": {"code": code, "message": body["detail"]["message"]}}, body
    assert "Traceback" not in response.text
    if retry_after is not None:
        assert response.headers.get("retry-after") == retry_after


# --- PostgreSQL -------------------------------------------------------------------------------


def test_database_outage_under_a_real_server(tmp_path: Path) -> None:
    with postgres_instance() as pg:
        env = {
            "AUTHSVC_DATABASE_URL": pg.url,
            "AUTHSVC_BCRYPT_ROUNDS": "4",
            "AUTHSVC_LOG_FORMAT": "json",
            **ROOMY_LIMITS,
            **NO_VERIFICATION,
        }
        migrated = run_cli(["migrate"], tmp_path, env)
        assert migrated.returncode == 0, migrated.stderr
        with serve(tmp_path, workers=2, env=env) as server:
            _database_outage(server, pg)
        assert PASSWORD not in server.log()


def _database_outage(server: Server, pg: PostgresInstance) -> None:
    emails = [f"kept{i}@example.com" for i in range(5)]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for email in emails:
            created = client.post("/auth/register", json={"email": email, "password": PASSWORD})
            assert created.status_code == 201, created.text
        signed_in = client.post("/auth/token", data=form(emails[0]))
        assert signed_in.status_code == 200, signed_in.text
        headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}

    pg.stop()
    # New connections each time, so that both workers (and their pools) meet the outage.
    for _ in range(4):
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            assert_clean_503(client.get("/readyz"), "DATABASE_UNAVAILABLE")
            assert client.get("/healthz").status_code == 200
            jwks = client.get("/.well-known/jwks.json")  # the keys are on disk
            assert jwks.status_code == 200 and jwks.json()["keys"], jwks.text
            new = {"email": "during@example.com", "password": PASSWORD}
            for response in (
                client.post("/auth/register", json=new),
                client.post("/auth/token", data=form(emails[1])),
                client.get("/users/me", headers=headers),
            ):
                assert_clean_503(response, "DATABASE_UNAVAILABLE", retry_after="5")

    entries = log_entries(server)
    outage = [e for e in entries if "database unreachable" in e["message"]]
    assert outage and all(e["level"] == "WARNING" for e in outage), outage
    assert not [e for e in entries if e["level"] in ("ERROR", "CRITICAL")]
    assert "Traceback" not in server.log()

    pg.start()  # same data directory, same port; the server is not restarted
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        # Both workers ready again: several fresh connections in a row all say so.
        def ready() -> bool:
            return all(
                httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200
                for _ in range(6)
            )

        # A deadline, not a sleep: a loaded machine may be slow, and uvicorn may have restarted
        # a worker during the outage (a missed health check); it comes up without the database
        # and finishes its start-up work now (test_start_during_outage.py).
        until(ready, "/readyz 200 again after PostgreSQL came back", timeout=90)
        assert client.get("/users/me", headers=headers).status_code == 200
        for email in emails:  # everything acknowledged before the outage is still there
            response = client.post("/auth/token", data=form(email))
            assert response.status_code == 200, (email, response.text)
        # The registration refused during the outage did not half-happen; it works now.
        after = client.post(
            "/auth/register", json={"email": "during@example.com", "password": PASSWORD}
        )
        assert after.status_code == 201, after.text
        assert client.post("/auth/token", data=form("during@example.com")).status_code == 200


# --- Redis ------------------------------------------------------------------------------------


class RedisInstance:
    """A throw-away Redis that can be stopped and started again on the same port."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found on PATH; bash .ci/install-servers")
        self.binary, self.root = binary, root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.root / "redis.log").open("ab") as log_file:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", str(self.root)],
                stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.root / "redis.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"Redis did not start; its log:\n{log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        assert not self.ping()

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def redis() -> Iterator[RedisInstance]:
    root = Path(tempfile.mkdtemp(prefix="authsvc-redis-"))
    instance = RedisInstance(root)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


def _login_limit_holds(server: Server, username: str) -> None:
    """AUTHSVC_RATELIMIT_LOGIN_USERNAME=3/minute: the fourth attempt is refused."""
    statuses = []
    for _ in range(4):
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            statuses.append(client.post("/auth/token", data=form(username, WRONG_PASSWORD)))
    assert [r.status_code for r in statuses] == [400, 400, 400, 429], [r.text for r in statuses]
    assert statuses[-1].json()["detail"]["code"] == "RATE_LIMITED"


@pytest.mark.parametrize("fail_open", [False, True], ids=["fail-closed", "fail-open"])
def test_redis_outage_under_a_real_server(
    tmp_path: Path, redis: RedisInstance, fail_open: bool
) -> None:
    env = {
        **ROOMY_LIMITS,
        **NO_VERIFICATION,
        "AUTHSVC_RATELIMIT_STORAGE_URI": redis.url,
        "AUTHSVC_RATELIMIT_LOGIN_USERNAME": "3/minute",
        "AUTHSVC_RATELIMIT_FAIL_OPEN": "true" if fail_open else "false",
        "AUTHSVC_BCRYPT_ROUNDS": "4",
        "AUTHSVC_LOG_FORMAT": "json",
    }
    with serve(tmp_path, workers=2, env=env) as server:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            created = client.post(
                "/auth/register", json={"email": "user@example.com", "password": PASSWORD}
            )
            assert created.status_code == 201, created.text
        _login_limit_holds(server, "before@example.com")

        redis.stop()
        for _ in range(4):  # fresh connections: both workers meet the outage
            with httpx.Client(base_url=server.base_url, timeout=30) as client:
                # The probes are not rate-limited, and the database is fine.
                assert client.get("/healthz").status_code == 200
                assert client.get("/readyz").status_code == 200
                login = client.post("/auth/token", data=form("user@example.com"))
                # An anonymous route under the per-IP limit: 401 when the limiter lets it by.
                anonymous = client.get("/users/me")
                # The keys are under no limit (issue 11): resource servers verify regardless.
                jwks = client.get("/.well-known/jwks.json")
                assert jwks.status_code == 200, jwks.text
                if fail_open:
                    assert login.status_code == 200, login.text
                    assert anonymous.status_code == 401, anonymous.text
                else:
                    assert_clean_503(login, "RATE_LIMIT_UNAVAILABLE", retry_after="5")
                    assert_clean_503(anonymous, "RATE_LIMIT_UNAVAILABLE", retry_after="5")
        if fail_open:
            # Open means no limit at all while Redis is away: a fifth attempt is not a 429.
            for _ in range(5):
                with httpx.Client(base_url=server.base_url, timeout=30) as client:
                    wrong = client.post("/auth/token", data=form("open@example.com", "nope!!!!"))
                    assert wrong.status_code == 400, wrong.text

        entries = log_entries(server)
        verb = "allowing" if fail_open else "refusing"
        warned = [e for e in entries if f"rate-limit storage unavailable, {verb}" in e["message"]]
        assert warned and all(e["level"] == "WARNING" for e in warned), entries[-10:]
        assert not [e for e in entries if e["level"] in ("ERROR", "CRITICAL")]
        assert "Traceback" not in server.log()

        redis.start()  # same port, empty: the server finds it again by itself

        def login_works() -> bool:
            with httpx.Client(base_url=server.base_url, timeout=30) as client:
                return client.post("/auth/token", data=form("user@example.com")).status_code == 200

        until(login_works, "a login once Redis is back")
        _login_limit_holds(server, "after@example.com")
    assert PASSWORD not in server.log()


# --- SIGTERM ----------------------------------------------------------------------------------

IN_FLIGHT = 4


def read_by_server(port: int, connections: int) -> bool:
    """The server on 127.0.0.1:``port`` has accepted at least ``connections`` connections and
    read every byte sent on them: the kernel queues nothing for it. Linux's /proc/net/tcp
    shows, for a listening socket, the connections waiting to be accepted and, for an
    established one, the bytes not yet read (the ``rx_queue`` column)."""
    waiting, unread, established = 0, 0, 0
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.rsplit(":", 1)[1], 16) != port:
            continue
        queued = int(queues.split(":")[1], 16)
        if state == "0A":  # TCP_LISTEN
            waiting += queued
        elif state == "01":  # TCP_ESTABLISHED
            unread += queued
            established += 1
    return waiting == 0 and unread == 0 and established >= connections


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_graceful_shutdown_finishes_in_flight_requests(tmp_path: Path, workers: int) -> None:
    """Four logins, ~1.5 s of bcrypt each on two CPUs, are in flight when SIGTERM comes."""
    # bcrypt at cost 14 keeps each login busy for seconds (Argon2id, the default, is quicker).
    env = {
        **ROOMY_LIMITS,
        **NO_VERIFICATION,
        "AUTHSVC_PASSWORD_SCHEME": "bcrypt",
        "AUTHSVC_BCRYPT_ROUNDS": "14",
        "AUTHSVC_LOG_FORMAT": "json",
    }
    with serve(tmp_path, workers=workers, env=env) as server:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            created = client.post(
                "/auth/register", json={"email": "slow@example.com", "password": PASSWORD}
            )
            assert created.status_code == 201, created.text

        sent = threading.Semaphore(0)

        def trace(event: str, info: dict[str, Any]) -> None:
            if event == "http11.send_request_body.complete":
                sent.release()

        def login() -> tuple[httpx.Response, float]:
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                response = client.post(
                    "/auth/token", data=form("slow@example.com"), extensions={"trace": trace}
                )
                return response, time.monotonic()

        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            logins = [pool.submit(login) for _ in range(IN_FLIGHT)]
            for _ in logins:  # every request is on the wire...
                assert sent.acquire(timeout=30)
            port = httpx.URL(server.base_url).port
            assert port is not None
            until(  # ...and read by the server (bcrypt then keeps it busy for seconds)
                lambda: read_by_server(port, IN_FLIGHT), "the server reading every login"
            )
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)

            def new_request_fails() -> bool:
                # One worker closes its socket (connection refused); with several, the
                # supervisor keeps it open until it exits, and nobody answers.
                try:
                    httpx.get(f"{server.base_url}/healthz", timeout=0.5)
                except httpx.TransportError:
                    return True
                return False

            until(new_request_fails, "new requests no longer served", timeout=10)
            assert not all(f.done() for f in logins), "the logins ended before the check"
            assert server.process.poll() is None

            for future in logins:
                response, finished = future.result(timeout=30)
                assert response.status_code == 200, response.text
                assert response.json()["token_type"].lower() == "bearer"
                assert finished > signalled  # answered after SIGTERM: it was in flight
        try:
            code = server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 15 s after SIGTERM:\n{server.log()}") from None
    # serve() leaves an exited process alone. Each worker shut its application down in order.
    messages = [e["message"] for e in log_entries(server)]
    assert messages.count("Application shutdown complete.") == workers, messages[-12:]
    assert not [m for m in messages if "timeout graceful shutdown exceeded" in m]
    assert "Traceback" not in server.log()
    # One process: uvicorn re-raises the SIGTERM it caught once it has shut down cleanly, so
    # the process ends "killed by SIGTERM" (status 143), the Unix convention that systemd and
    # Docker treat as a normal stop. With --workers the supervisor returns and serve exits 0.
    expected = -signal.SIGTERM if workers == 1 else 0
    assert code == expected, f"exit code {code}:\n{server.log()[-3000:]}"
