"""Security headers: ``nosniff`` on every answer; on HTML, a Content-Security-Policy that
allows nothing from elsewhere, and no framing or referrers.

The API explorer pages (``/docs``, ``/redoc``) are the only HTML authsvc serves; they set a
policy of their own that allows their inline start-up script by its hash (``page_policy``).
Any other HTML answer gets the strictest policy (``default-src 'none'``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOSNIFF = {"X-Content-Type-Options": "nosniff"}
HTML_HEADERS = {"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
STRICT_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S | re.I)


def script_hashes(html: str) -> list[str]:
    """CSP source expressions (``'sha256-...'``) for each inline ``<script>`` of a page."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


def page_policy(html: str, *, workers: bool = False) -> str:
    """The policy of an API explorer page: scripts, styles, images and fetches from this
    origin only. Inline scripts pass by hash, never by ``'unsafe-inline'``. Inline *styles* are
    allowed: Swagger UI and ReDoc insert style elements at run time (CSS cannot run code).
    ``data:`` images are the icons inside Swagger UI's CSS; ReDoc runs its search in a
    ``blob:`` worker. Both are made in the page, never fetched from elsewhere."""
    scripts: Iterable[str] = ["'self'", *script_hashes(html)]
    directives = [
        "default-src 'none'",
        f"script-src {' '.join(scripts)}",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        *(["worker-src 'self' blob:"] if workers else []),
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


class SecurityHeaders:
    """ASGI middleware: adds the headers above to every HTTP answer that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in NOSNIFF.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", STRICT_POLICY)
                    for name, value in HTML_HEADERS.items():
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
