"""Password hashing with passlib's ``CryptContext`` (libpass), off the event loop.

* New hashes use the configured scheme (``AUTHSVC_PASSWORD_SCHEME``): ``argon2`` by default,
  Argon2id with OWASP's parameters (Password Storage Cheat Sheet: m=19 MiB, t=2, p=1), or
  ``bcrypt``, as ``bcrypt_sha256``, which pre-hashes with SHA-256 so bytes past bcrypt's 72-byte
  limit still count.
* Hashes of every other scheme (plain ``bcrypt`` from imports included) still verify and are
  replaced on the next successful login (``verify_and_update``), as are hashes made with
  weaker parameters than configured. A plain bcrypt hash only ever saw 72 bytes: a longer
  password is refused against it, never silently cut to match.
* Both hashes release the GIL, so hashing runs in worker threads; a capacity limiter caps how
  many run at once, so a login storm queues for the hasher instead of starving every other
  request.
* Unknown accounts cost a verification against a dummy hash, so response time does not reveal
  which emails are registered.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Literal, TypeVar

import anyio
import anyio.to_thread
from passlib.context import CryptContext

from authsvc.config import Settings

T = TypeVar("T")

Scheme = Literal["argon2", "bcrypt"]
# The passlib handler new hashes use, per setting; every one listed stays verifiable.
_DEFAULT_HANDLER = {"argon2": "argon2", "bcrypt": "bcrypt_sha256"}
_BCRYPT_MAX_BYTES = 72


class PasswordHasher:
    def __init__(
        self,
        *,
        scheme: Scheme = "argon2",
        rounds: int = 12,
        argon2_memory_kib: int = 19_456,
        argon2_time_cost: int = 2,
        argon2_parallelism: int = 1,
        max_concurrency: int = 2,
    ) -> None:
        self._context = CryptContext(
            schemes=["argon2", "bcrypt_sha256", "bcrypt"],
            default=_DEFAULT_HANDLER[scheme],
            # Every scheme but the configured one is upgraded at the next login.
            deprecated=["auto"],
            argon2__type="ID",
            argon2__memory_cost=argon2_memory_kib,
            argon2__time_cost=argon2_time_cost,
            argon2__parallelism=argon2_parallelism,
            bcrypt_sha256__rounds=rounds,
            bcrypt_sha256__min_rounds=rounds,
        )
        self._max_concurrency = max_concurrency
        self._limiter: anyio.CapacityLimiter | None = None
        self._dummy_hash: str | None = None
        # Identifiers of the threads that did hashing work: lets tests prove it stayed off the
        # event-loop thread. Bounded by the size of the worker-thread pool.
        self.worker_threads: set[int] = set()
        # How many hashes ran at once, now and at the most: the cap made observable.
        self.in_flight = 0
        self.peak_in_flight = 0
        self._count_lock = threading.Lock()

    async def _run(self, func: Callable[[], T]) -> T:
        if self._limiter is None:
            # Created lazily: an anyio limiter belongs to the running event loop.
            self._limiter = anyio.CapacityLimiter(self._max_concurrency)

        def work() -> T:
            with self._count_lock:
                self.worker_threads.add(threading.get_ident())
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                return func()
            finally:
                with self._count_lock:
                    self.in_flight -= 1

        return await anyio.to_thread.run_sync(work, limiter=self._limiter)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: str(self._context.hash(password)))

    async def verify_and_update(self, password: str, hashed: str) -> tuple[bool, str | None]:
        def work() -> tuple[bool, str | None]:
            if _plain_bcrypt(hashed) and len(password.encode()) > _BCRYPT_MAX_BYTES:
                # bcrypt would compare the first 72 bytes only: never let a cut match.
                self._context.dummy_verify()
                return False, None
            try:
                verified, new_hash = self._context.verify_and_update(password, hashed)
            except (ValueError, TypeError):
                # An unrecognised or corrupt stored hash never verifies.
                return False, None
            return bool(verified), new_hash

        return await self._run(work)

    async def verify(self, password: str, hashed: str) -> bool:
        verified, _ = await self.verify_and_update(password, hashed)
        return verified

    async def dummy_verify(self, password: str) -> None:
        """Spend what a real verification costs, for accounts that do not exist."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify_and_update(password, self._dummy_hash)

    def needs_update(self, hashed: str) -> bool:
        return bool(self._context.needs_update(hashed))


def hasher_from_settings(
    settings: Settings, *, max_concurrency: int | None = None
) -> PasswordHasher:
    return PasswordHasher(
        scheme=settings.password_scheme,
        rounds=settings.bcrypt_rounds,
        argon2_memory_kib=settings.argon2_memory_kib,
        argon2_time_cost=settings.argon2_time_cost,
        argon2_parallelism=settings.argon2_parallelism,
        max_concurrency=max_concurrency or settings.password_hash_concurrency,
    )


def _plain_bcrypt(hashed: str) -> bool:
    return hashed.startswith(("$2a$", "$2b$", "$2y$", "$2x$"))
