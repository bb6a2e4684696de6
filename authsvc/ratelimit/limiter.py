"""Rate limits on slowapi's ``Limiter`` (storage from a URI, the ``limits`` strategies).

slowapi's decorator keys a limit by the request alone and, combined with its middleware, counts
default limits twice on decorated routes; the login limit also needs the submitted username,
which only the parsed form knows. So the routes and dependencies ask this facade explicitly,
and it hits the limits through the limiter slowapi built from the settings.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from slowapi import Limiter

from authsvc.errors import RateLimited, ServiceUnavailable

log = logging.getLogger("authsvc.ratelimit")


@dataclass(frozen=True)
class Rule:
    name: str
    item: RateLimitItem

    @classmethod
    def parse(cls, name: str, value: str) -> Rule:
        return cls(name, parse(value))


class RateLimiter:
    def __init__(self, *, storage_uri: str, enabled: bool = True, fail_open: bool = False) -> None:
        self.enabled = enabled
        self.fail_open = fail_open
        self._limiter = Limiter(
            key_func=lambda: "",
            storage_uri=storage_uri,
            strategy="moving-window",
            enabled=enabled,
            headers_enabled=False,
            key_prefix="authsvc",
        )

    def hit(self, rule: Rule, key: str) -> None:
        """Count one request against ``rule`` for ``key``; raise ``RateLimited`` past the limit."""
        if not self.enabled:
            return
        strategy = self._limiter.limiter
        try:
            if strategy.hit(rule.item, "authsvc", rule.name, key):
                return
            reset_at, _remaining = strategy.get_window_stats(rule.item, "authsvc", rule.name, key)
        except Exception as exc:  # noqa: BLE001 - any storage failure (Redis down, timeouts)
            if self.fail_open:
                log.warning("rate-limit storage unavailable, allowing (%s): %r", rule.name, exc)
                return
            log.warning("rate-limit storage unavailable, refusing (%s): %r", rule.name, exc)
            raise ServiceUnavailable(
                "Rate limiting is unavailable; try again shortly.",
                code="RATE_LIMIT_UNAVAILABLE",
            ) from None
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimited(
            f"Too many requests ({rule.item}); retry in {retry_after} s.",
            retry_after=retry_after,
            rule=rule.name,
        )

    def reset(self) -> None:
        self._limiter.reset()
