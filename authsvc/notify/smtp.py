"""SMTP notifier (stdlib smtplib, in a worker thread so the event loop never blocks on I/O)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

import anyio.to_thread

from authsvc.notify.base import TokenMessage


class SmtpNotifier:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        security: Literal["starttls", "tls", "none"] = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.security = security
        self.username = username
        self._password = password
        self.timeout = timeout
        # Certificates are always verified, host name included; ``ca_file`` replaces the
        # system's CAs (for a private CA).
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _compose(self, message: TokenMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail.set_content(message.body())
        return mail

    def _send_blocking(self, mail: EmailMessage) -> None:
        context = self._tls
        client: smtplib.SMTP
        if self.security == "tls":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.security == "starttls":
                client.starttls(context=context)
            if self.username and self._password:
                client.login(self.username, self._password)
            client.send_message(mail)

    async def send(self, message: TokenMessage) -> None:
        await anyio.to_thread.run_sync(self._send_blocking, self._compose(message))
