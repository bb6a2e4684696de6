"""Development notifier: writes the message to standard output, never to the log.

Tokens are secrets; the log pipeline must never carry them, so this notifier prints directly.
Settings refuse it outside ``AUTHSVC_ENVIRONMENT=development``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from authsvc.notify.base import TokenMessage


class ConsoleNotifier:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: TokenMessage) -> None:
        stream = self._stream or sys.stdout
        stream.write(f"--- mail to {message.to}: {message.subject} ---\n{message.body()}\n---\n")
        stream.flush()
