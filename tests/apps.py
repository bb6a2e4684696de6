"""Apps shared between tests: built once per distinct settings, in a clean state for each test.

``create_app`` loads the key ring, builds an engine, parses and validates the Cedar policy set
and reads the common-password list: more time than most tests take. Tests with equal settings
(and equal policy files) get the same app. Around each test the cache puts back what a test may
change and the next one must not see:

- before: the rate-limit counters (memory storage), the built-in permissions (``start_up``,
  what the lifespan does; ASGITransport does not run it);
- after: messages still being delivered (drained, so none lands in the next test's output),
  then the database rows (``reset_database``: back to the migrated state).

Some state cannot be put back cheaply: a reloaded policy set, a rotated key ring, a route a
test added. The cache notes the app's *shape* before a test and throws the app away after it
when the shape changed; the next test with those settings gets a new one. Tests that write
files for good (a key store they rotate) use their own ``data_dir``, hence their own app.

Metrics are not reset: tests read differences (``tests/api/test_observability.py``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from pydantic import SecretStr

from authsvc.config import Settings
from authsvc.main import create_app, start_up
from authsvc.services.container import AppServices

# Tests run grouped by engine and module, so a few apps cover the runs of equal settings; the
# bound keeps idle database connections (up to the pool size per engine) few.
CACHE_SIZE = 4
DRAIN_SECONDS = 30.0


@dataclass
class CacheStats:
    built: int = 0
    reused: int = 0
    discarded: int = 0


STATS = CacheStats()


def _folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def settings_key(settings: Settings) -> str:
    """Equal for equal settings values (secrets compared by value) and equal policy files."""
    values = sorted(
        (name, value.get_secret_value() if isinstance(value, SecretStr) else value)
        for name, value in settings
    )
    return repr(values) + _folder_digest(settings.resolved_policies_dir)


def _shape(app: FastAPI) -> Hashable:
    """What a test may change on an app and no reset puts back."""
    services: AppServices = app.state.services
    return (
        id(services),  # a test that swapped the container (another grant registry, ...)
        services.policies.bundle.digest,
        tuple(key.kid for key in services.keys.published()),
        tuple(app.router.routes),
        tuple(app.dependency_overrides.items()),
        len(app.user_middleware),
    )


class AppCache:
    def __init__(
        self,
        reset_database: Callable[[AppServices], Awaitable[None]],
        size: int = CACHE_SIZE,
    ) -> None:
        self._reset_database = reset_database
        self._size = size
        self._apps: OrderedDict[str, FastAPI] = OrderedDict()

    @asynccontextmanager
    async def lease(self, settings: Settings) -> AsyncIterator[FastAPI]:
        key = settings_key(settings)
        app = self._apps.pop(key, None)
        if app is None:
            app = create_app(settings)
            STATS.built += 1
        else:
            STATS.reused += 1
        self._apps[key] = app  # the most recently used last
        while len(self._apps) > self._size:
            await _close(self._apps.popitem(last=False)[1])
        services: AppServices = app.state.services
        services.limiter.reset()
        await start_up(services)
        shape = _shape(app)
        try:
            yield app
        finally:
            try:
                await services.notifier.drain(timeout=DRAIN_SECONDS)
                await self._reset_database(services)
            finally:
                if _shape(app) != shape:
                    STATS.discarded += 1
                    self._apps.pop(key, None)
                    await _close(app)

    async def close(self) -> None:
        while self._apps:
            await _close(self._apps.popitem()[1])


async def _close(app: FastAPI) -> None:
    services: AppServices = app.state.services
    await services.notifier.drain(timeout=DRAIN_SECONDS)
    await services.engine.dispose()
