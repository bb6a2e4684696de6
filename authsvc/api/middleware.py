"""ASGI middleware: a cap on request bodies, enforced before anything reads them."""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """413 for a declared ``Content-Length`` over the cap, and for a streamed body that grows
    past it (chunked uploads declare no length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._reject(send, 400, "BAD_CONTENT_LENGTH", "Invalid Content-Length.")
                    return
                if declared > self.max_bytes:
                    await self._reject(send, 413, "PAYLOAD_TOO_LARGE", self._message())
                    return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged and is
                    # answered by the app's handler, before any route code has run.
                    raise HTTPException(
                        413, detail={"code": "PAYLOAD_TOO_LARGE", "message": self._message()}
                    )
            return message

        await self.app(scope, counting_receive, send)

    def _message(self) -> str:
        return f"Request body larger than {self.max_bytes} bytes."

    @staticmethod
    async def _reject(send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"detail": {"code": code, "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
