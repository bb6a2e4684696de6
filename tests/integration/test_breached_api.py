"""The online breached-password check against a local server speaking the range protocol.

The server (``asyncio.start_server`` on 127.0.0.1, in the test's event loop) answers
``GET /range/<5 hex>`` with the ``SUFFIX:COUNT`` lines of its listed hashes in that range plus
padding lines (count 0), like the Pwned Passwords API with ``Add-Padding: true``. It keeps
every request's raw bytes, so the tests can prove the password and its full hash never left.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from authsvc.config import Settings
from authsvc.security.password_policy import BREACHED, PasswordPolicy
from authsvc.services.container import AppServices
from tests.conftest import row_count
from tests.servers import free_port

pytestmark = pytest.mark.integration

# Long enough, and on no offline list: only the range server knows it.
LISTED = "orbit tangerine lighthouse 1987"
UNLISTED = "quiet harbour under copper skies"
LOGGER = "authsvc.security.breached"


def sha1(password: str) -> str:
    return hashlib.sha1(password.encode()).hexdigest().upper()


class RangeServer:
    """Modes: ``range`` (the protocol), ``500``, ``garbage``, ``huge`` and ``hang`` (reads
    the request, never answers)."""

    def __init__(self) -> None:
        self.mode = "range"
        self.listed: dict[str, int] = {}
        self.requests: list[bytes] = []
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/range/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def body(self, prefix: str) -> bytes:
        lines = [
            # Lower case: the client must match suffixes case-insensitively.
            f"{digest[5:].lower()}:{count}"
            for digest, count in self.listed.items()
            if digest[:5] == prefix
        ]
        # Padding: decoys with count 0 (Add-Padding: true).
        lines += [f"{secrets.token_hex(18)[:35].upper()}:0" for _ in range(50)]
        return "\r\n".join(lines).encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            if self.mode == "hang":
                await self._release.wait()
                return
            status, body = "200 OK", b""
            if self.mode == "range":
                path = head.split(b" ", 2)[1].decode()
                body = self.body(path.rsplit("/", 1)[1])
            elif self.mode == "500":
                status, body = "500 Internal Server Error", b"oops"
            elif self.mode == "garbage":
                body = b"<html><body>Service moved</body></html>"
            elif self.mode == "huge":
                body = (b"0" * 35 + b":1\r\n") * 40_000  # ~1.5 MB
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: text/plain\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
async def range_server() -> AsyncIterator[RangeServer]:
    server = RangeServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def server(range_server: RangeServer) -> RangeServer:
    range_server.mode = "range"
    range_server.listed = {sha1(LISTED): 42}
    range_server.requests.clear()
    return range_server


def assert_only_the_prefix_left(server: RangeServer, password: str) -> None:
    digest = sha1(password)
    assert len(server.requests) == 1
    raw = server.requests[0]
    request_line = raw.split(b"\r\n", 1)[0].decode()
    assert request_line == f"GET /range/{digest[:5]} HTTP/1.1"
    assert b"\r\nadd-padding: true\r\n" in raw.lower()
    for secret in (password, digest, digest.lower(), digest[5:], digest[5:].lower()):
        assert secret.encode() not in raw


class TestThroughRegistration:
    @pytest.fixture
    def settings_overrides(self, range_server: RangeServer) -> dict[str, Any]:
        return {
            "breached_passwords_api_url": range_server.url,
            # Generous: a loaded machine must not turn the answers below into time-outs.
            # The time-out itself is proven at the policy level with a short setting.
            "breached_passwords_timeout_seconds": 10.0,
        }

    async def test_a_listed_password_is_refused(
        self, client: httpx.AsyncClient, services: AppServices, server: RangeServer
    ) -> None:
        response = await client.post(
            "/auth/register", json={"email": "pwned@example.com", "password": LISTED}
        )
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail["code"] == "REGISTER_INVALID_PASSWORD"
        assert detail["reason"] == BREACHED
        assert await row_count(services) == 0
        assert_only_the_prefix_left(server, LISTED)

    async def test_an_unlisted_password_is_accepted(
        self, client: httpx.AsyncClient, services: AppServices, server: RangeServer
    ) -> None:
        response = await client.post(
            "/auth/register", json={"email": "fine@example.com", "password": UNLISTED}
        )
        assert response.status_code in (201, 202), response.text
        assert await row_count(services) == 1
        assert_only_the_prefix_left(server, UNLISTED)

    @pytest.mark.parametrize("mode", ["500", "garbage"])
    async def test_an_api_failure_lets_the_password_through_with_a_warning(
        self,
        client: httpx.AsyncClient,
        services: AppServices,
        server: RangeServer,
        caplog: pytest.LogCaptureFixture,
        mode: str,
    ) -> None:
        server.mode = mode
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            response = await client.post(
                "/auth/register", json={"email": "open@example.com", "password": LISTED}
            )
        assert response.status_code in (201, 202), response.text
        assert await row_count(services) == 1
        warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert len(warnings) == 1 and "password accepted" in warnings[0]
        assert LISTED not in caplog.text and sha1(LISTED)[5:] not in caplog.text.upper()


def policy_for(url: str, timeout: float = 10.0) -> PasswordPolicy:
    """The policy as the app builds it, from settings."""
    settings = Settings(
        _env_file=None,
        breached_passwords_api_url=url,
        breached_passwords_timeout_seconds=timeout,
    )
    return PasswordPolicy.from_settings(settings)


async def test_the_policy_refuses_a_listed_password_in_any_case_of_hex(
    server: RangeServer,
) -> None:
    policy = policy_for(server.url)
    assert await policy.validate(LISTED) == BREACHED
    assert_only_the_prefix_left(server, LISTED)
    assert await policy.validate(UNLISTED) is None


async def test_padding_entries_do_not_count(server: RangeServer) -> None:
    server.listed = {sha1(LISTED): 0}  # present, but as padding
    assert await policy_for(server.url).validate(LISTED) is None


async def test_offline_refusals_never_reach_the_api(server: RangeServer) -> None:
    policy = policy_for(server.url)
    assert await policy.validate("too short") is not None
    assert server.requests == []


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("hang", "no answer within 0.3 s"),
        ("500", "HTTP 500"),
        ("garbage", "unreadable answer"),
        ("huge", "larger than"),
        ("down", "request failed (ConnectError)"),
    ],
)
async def test_failures_fail_open_with_a_warning(
    server: RangeServer, caplog: pytest.LogCaptureFixture, mode: str, reason: str
) -> None:
    url = server.url
    if mode == "down":
        url = f"http://127.0.0.1:{free_port()}/range/"  # nothing listens there
    else:
        server.mode = mode
    # "hang" answers nothing: only the short time-out setting ends the wait.
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await policy_for(url, timeout=0.3).validate(LISTED) is None
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert "password accepted" in message and reason in message
    assert LISTED not in message and sha1(LISTED)[:5] not in message
