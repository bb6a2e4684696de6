"""Deliver messages in the background, so a response never waits for (or times) the mail server.

``forgot-password`` and ``request-verify-token`` answer 202 whether or not the account exists.
If the answer waited for SMTP when it does, the response time would tell who is registered;
so the outbox accepts the message at once and delivers it in a task of its own.
"""

from __future__ import annotations

import asyncio
import logging

from authsvc.notify.base import Notifier, TokenMessage

log = logging.getLogger("authsvc.notify")


class Outbox:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._pending: set[asyncio.Task[None]] = set()

    async def send(self, message: TokenMessage) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, message: TokenMessage) -> None:
        try:
            await self.notifier.send(message)
        except Exception as exc:  # noqa: BLE001 - a failed delivery must not end the worker
            # The exception, never the message: its body holds the token.
            log.error("could not deliver the %s message: %r", message.purpose, exc)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the messages accepted so far (shutdown, tests)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
