"""The SMTP notifier against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email
import logging
import re
from collections.abc import Iterator
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from authsvc.services.container import AppServices
from tests.conftest import Login, MakeUser
from tests.servers import free_port

pytestmark = pytest.mark.integration

NEW_PASSWORD = "mailed reset passphrase"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []
        self.delay_seconds = 0.0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.delay_seconds)
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        self.messages.append((envelope, email.message_from_bytes(raw)))
        return "250 OK"


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class TestSmtpDelivery:
    @pytest.fixture
    def settings_overrides(self, smtp_sink: tuple[Inbox, int]) -> dict[str, Any]:
        _, port = smtp_sink
        return {
            "notifier": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_security": "none",
            "smtp_sender": "authsvc <auth@example.com>",
            "public_url": "https://app.example.com/account",
        }

    async def test_reset_token_arrives_by_mail_and_works(
        self,
        client: httpx.AsyncClient,
        make_user: MakeUser,
        login: Login,
        smtp_sink: tuple[Inbox, int],
        services: AppServices,
    ) -> None:
        inbox, _ = smtp_sink
        inbox.messages.clear()
        await make_user("mailme@example.com")
        response = await client.post("/auth/forgot-password", json={"email": "mailme@example.com"})
        assert response.status_code == 202
        await services.notifier.drain()

        (envelope, message) = inbox.messages[-1]
        assert envelope.rcpt_tos == ["mailme@example.com"]
        assert message["Subject"] == "Reset your password"
        assert message["From"] == "authsvc <auth@example.com>"
        body = message.get_payload(decode=True)
        assert isinstance(body, bytes)
        text = body.decode()
        link = re.search(r"https://app\.example\.com/account/reset-password\?token=(\S+)", text)
        assert link is not None, text
        token = link.group(1)
        assert token in text.splitlines()

        done = await client.post(
            "/auth/reset-password", json={"token": token, "password": NEW_PASSWORD}
        )
        assert done.status_code == 200, done.text
        await login("mailme@example.com", NEW_PASSWORD)

    async def test_verification_mail(
        self,
        client: httpx.AsyncClient,
        make_user: MakeUser,
        smtp_sink: tuple[Inbox, int],
        services: AppServices,
    ) -> None:
        inbox, _ = smtp_sink
        inbox.messages.clear()
        await make_user("verifyme@example.com", is_verified=False)
        response = await client.post(
            "/auth/request-verify-token", json={"email": "verifyme@example.com"}
        )
        assert response.status_code == 202
        await services.notifier.drain()
        (_, message) = inbox.messages[-1]
        assert message["Subject"] == "Verify your email address"

    async def test_throttle_notice_mail(
        self,
        client: httpx.AsyncClient,
        make_user: MakeUser,
        smtp_sink: tuple[Inbox, int],
        services: AppServices,
    ) -> None:
        """The owner is told once the account starts being throttled (issue 13)."""
        inbox, _ = smtp_sink
        inbox.messages.clear()
        await make_user("guessed@example.com")
        form = {"grant_type": "password", "username": "guessed@example.com", "password": "no"}
        for _ in range(services.settings.login_throttle_threshold):
            assert (await client.post("/auth/token", data=form)).status_code == 400
        await services.notifier.drain()
        [(envelope, message)] = inbox.messages
        assert envelope.rcpt_tos == ["guessed@example.com"]
        assert message["Subject"] == "Sign-in attempts on your account"
        body = message.get_payload(decode=True)
        assert isinstance(body, bytes) and b"slowed down" in body

    async def test_the_response_does_not_wait_for_the_mail_server(
        self,
        client: httpx.AsyncClient,
        make_user: MakeUser,
        smtp_sink: tuple[Inbox, int],
        services: AppServices,
    ) -> None:
        """Waiting would make known addresses answer slower than unknown ones."""
        inbox, _ = smtp_sink
        inbox.messages.clear()
        inbox.delay_seconds = 3.0
        try:
            await make_user("slowmail@example.com")
            response = await client.post(
                "/auth/forgot-password", json={"email": "slowmail@example.com"}
            )
            assert response.status_code == 202
            assert inbox.messages == []  # answered while the server is still busy
            await services.notifier.drain()
            assert len(inbox.messages) == 1
        finally:
            inbox.delay_seconds = 0.0


class TestSmtpDown:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "notifier": "smtp",
            "smtp_port": free_port(),  # nothing listens there
            "smtp_security": "none",
            "smtp_timeout_seconds": 2,
        }

    async def test_delivery_failure_is_logged_without_the_token(
        self,
        client: httpx.AsyncClient,
        make_user: MakeUser,
        caplog: pytest.LogCaptureFixture,
        services: AppServices,
    ) -> None:
        await make_user("lost@example.com")
        with caplog.at_level(logging.DEBUG):
            response = await client.post(
                "/auth/forgot-password", json={"email": "lost@example.com"}
            )
            await services.notifier.drain()
        # The caller learns nothing (no account enumeration); the operator sees the failure.
        assert response.status_code == 202
        failures = [r for r in caplog.records if "could not deliver" in r.getMessage()]
        assert len(failures) == 1
        assert "eyJ" not in caplog.text  # no JWT in any log line
