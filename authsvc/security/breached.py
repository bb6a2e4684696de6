"""The optional online breached-password check: the Pwned Passwords range protocol.

k-anonymity: only the first 5 hex digits of the password's SHA-1 leave the host
(``GET <url><PREFIX>``); the API answers every known hash in that range as ``SUFFIX:COUNT``
lines and the match happens here. ``Add-Padding: true`` asks for decoy lines (count 0) so the
response size does not tell an observer which range was asked. The password is never logged,
nor any part of its hash.

Fail open: the check guards against weak choices, it is not an authentication step, so an API
that is down, slow, or answers nonsense must not stop people from setting a password — the
password is accepted and a warning is logged (NIST SP 800-63B-4 §3.1.1.2 still has the
offline list). Answers are bounded in time (one deadline for the whole exchange) and in size.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from functools import lru_cache
from urllib.parse import urlsplit

import anyio
import httpx

log = logging.getLogger("authsvc.security.breached")

PREFIX_LENGTH = 5
_SUFFIX_LENGTH = 40 - PREFIX_LENGTH
_HEX = frozenset("0123456789ABCDEF")
# A padded range is 800-1,000 lines of ~40 bytes; anything far larger is not this protocol.
MAX_BODY_BYTES = 1 << 20


class RangeFormatError(ValueError):
    """The body is not ``SUFFIX:COUNT`` lines."""


def sha1_hex(password: str) -> str:
    # SHA-1 is the range protocol's index here, not a way of storing passwords.
    return hashlib.sha1(password.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


def parse_range(body: bytes) -> dict[str, int]:
    """``{SUFFIX: count}`` of a range response, suffixes upper-cased; padding lines (count 0)
    are kept with their 0 so the caller decides."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise RangeFormatError("the body is not ASCII") from None
    entries: dict[str, int] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        suffix, sep, count = line.partition(":")
        suffix = suffix.upper()
        if (
            not sep
            or len(suffix) != _SUFFIX_LENGTH
            or not _HEX.issuperset(suffix)
            or not (count.isascii() and count.isdigit())
        ):
            raise RangeFormatError("a line is not SUFFIX:COUNT")
        entries[suffix] = int(count)
    if not entries:
        # A real range is never empty (and never with padding): this is not the API.
        raise RangeFormatError("no entries")
    return entries


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    # Built once per process: loading the CA bundle per check would cost more than the check.
    return httpx.create_ssl_context()


class BreachedPasswordChecker:
    """``await is_breached(password)``: True only when the API positively lists it."""

    def __init__(self, url: str, *, timeout_seconds: float) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("the breached-passwords API URL must be http(s)://")
        self.url = url
        self.timeout_seconds = timeout_seconds
        # The host alone, for warnings: the full URL would carry the range asked.
        self._where = urlsplit(url).netloc

    async def is_breached(self, password: str) -> bool:
        digest = sha1_hex(password)
        prefix, suffix = digest[:PREFIX_LENGTH], digest[PREFIX_LENGTH:]
        try:
            with anyio.fail_after(self.timeout_seconds):
                body = await self._fetch(prefix)
            count = parse_range(body).get(suffix, 0)
        except (TimeoutError, httpx.TimeoutException):
            self._warn(f"no answer within {self.timeout_seconds} s")
            return False
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
            self._warn(f"request failed ({type(exc).__name__})")
            return False
        except _Refused as exc:
            self._warn(str(exc))
            return False
        except RangeFormatError as exc:
            self._warn(f"unreadable answer ({exc})")
            return False
        return count > 0

    async def _fetch(self, prefix: str) -> bytes:
        async with httpx.AsyncClient(
            timeout=self.timeout_seconds,
            verify=_tls_context(),
            follow_redirects=False,
            headers={"Add-Padding": "true", "User-Agent": "authsvc"},
        ) as client:
            async with client.stream("GET", self.url + prefix) as response:
                if response.status_code != 200:
                    raise _Refused(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise _Refused(f"answer larger than {MAX_BODY_BYTES} bytes")
                return bytes(body)

    def _warn(self, reason: str) -> None:
        log.warning(
            "breached-password check skipped, password accepted: %s from %s",
            reason,
            self._where,
        )


class _Refused(Exception):
    """The API answered, but not with a range we can use."""
