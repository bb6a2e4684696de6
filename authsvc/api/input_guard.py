"""ASGI middleware: refuse a NUL (U+0000) anywhere in a request, before any route runs.

PostgreSQL's text types cannot hold U+0000: a NUL that reached a query was a 500 (on SQLite it
was stored). No field of this API has a use for one, so it is refused at the edge, once, as the
app's validation error: 422 ``VALIDATION_ERROR`` whose error has ``type`` ``nul_byte``. Looked
at: the decoded path, the query string, header values, and bodies: a raw NUL in any (multipart
fields carry it raw), ``%00`` in urlencoded forms, the ``\\u0000`` escape in JSON (keys as well
as values).
"""

from __future__ import annotations

import json
import re

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CODE = "VALIDATION_ERROR"  # the app's code for bad input; errors[0].type says which
ERROR_TYPE = "nul_byte"
_MESSAGE = "The request contains a NUL character (U+0000), which no field accepts."
# ``\u0000`` preceded by an even number of backslashes (an odd run would escape its own "\").
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_FORM = b"application/x-www-form-urlencoded"


def _detail(where: str) -> dict[str, object]:
    return {
        "code": CODE,
        "message": f"{where}: {_MESSAGE}",
        "errors": [{"loc": [where], "msg": _MESSAGE, "type": ERROR_TYPE}],
    }


def _body_has_nul(body: bytes, content_type: bytes) -> bool:
    # Raw: a multipart field carries it as it is (no route takes binary uploads).
    if b"\x00" in body:
        return True
    if content_type.split(b";", 1)[0].strip().lower() == _FORM:
        # In a urlencoded body a literal "%" is written %25, so every %00 decodes to a NUL.
        return b"%00" in body
    return _JSON_NUL.search(body) is not None


async def _whole_body(receive: Receive) -> Message:
    """The body as one message (BodySizeLimit, outside this middleware, caps its size)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message  # the client went away
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}


class NulByteGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = self._in_head(scope)
        if where is not None:
            await self._reject(send, where)
            return
        content_type = dict(scope.get("headers", ())).get(b"content-type", b"")
        checked = False

        async def guarded_receive() -> Message:
            nonlocal checked
            if checked:
                return await receive()
            checked = True
            message = await _whole_body(receive)
            if message["type"] == "http.request" and _body_has_nul(message["body"], content_type):
                # Raised inside the app's body parsing: answered by the app's handler, before
                # any route code (FastAPI re-raises an HTTPException from there unchanged).
                raise HTTPException(422, detail=_detail("body"))
            return message

        await self.app(scope, guarded_receive, send)

    @staticmethod
    def _in_head(scope: Scope) -> str | None:
        if "\x00" in scope.get("path", ""):
            return "path"
        query: bytes = scope.get("query_string", b"")
        if b"\x00" in query or b"%00" in query:
            return "query"
        for name, value in scope.get("headers", ()):
            if b"\x00" in value:
                return f"header {name.decode('latin-1')}"
        return None

    @staticmethod
    async def _reject(send: Send, where: str) -> None:
        body = json.dumps({"detail": _detail(where)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 422,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
