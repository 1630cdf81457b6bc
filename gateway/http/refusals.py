"""Early refusals reach the client: answer first, then drain the unread request body.

A refusal sent before the body is read (413 for an oversized body, 401, 403, 415, 429 from the
front door) would otherwise end with the server closing a socket that still has unread upload
data: the kernel answers with a reset and the client, still uploading, loses the response it was
sent. So the response goes out whole (its bytes are written at once), but the ASGI response is
finished only after the rest of the body has been read and discarded, up to `limit` bytes and
`seconds`; the connection is then closed (`connection: close`), cleanly since nothing is unread.
Past the bound the connection is closed anyway (a client pushing gigabytes is not waited for).
Pure ASGI (STYLE: no BaseHTTPMiddleware, it buffers streams).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _expects_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


class DrainRefusedBodies:
    def __init__(self, app: ASGIApp, *, limit: int, seconds: float = 30.0) -> None:
        self.app = app
        self.limit = limit
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _expects_body(scope):
            await self.app(scope, receive, send)
            return
        state: MutableMapping[str, Any] = {"body_done": False, "closing": False}

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message: Message) -> None:
            if state["body_done"]:
                await send(message)
                return
            if message["type"] == "http.response.start":
                # The body is not read yet: this connection cannot be reused after the answer.
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                state["closing"] = True
                await send({**message, "headers": [*headers, (b"connection", b"close")]})
                return
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await send({**message, "more_body": True})  # every byte of the answer is out now
                await self._drain(tracked_receive)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app(scope, tracked_receive, guarded_send)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop the rest of the request body, within the byte and time bounds."""
        read = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.seconds):
                while read <= self.limit:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    read += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
