"""Waiting for something to happen: poll a condition until a deadline, never a fixed sleep.

A poll ends as soon as the condition holds, so a generous deadline costs nothing when things
go well and only bounds how long a failing test waits on a loaded machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def until(
    condition: Callable[[], bool], what: str, *, timeout: float = 30.0, interval: float = 0.1
) -> None:
    """Poll ``condition`` (blocking) until it is true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    what: str,
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` (sync or async) on the event loop until it is true; fail naming
    ``what`` at the deadline. The loop runs other tasks between attempts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(interval)
