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

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _expects_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


class RefusalGuard:
    """The receive and send of one request whose body may be refused before it is read.

    Bound methods of one small object, not closures: a stream that stays open holds them (and
    no middleware frame) for its life."""

    __slots__ = ("_limit", "_receive", "_seconds", "_send", "body_done")

    def __init__(self, receive: Receive, send: Send, *, limit: int, seconds: float = 30.0) -> None:
        self._receive = receive
        self._send = send
        self._limit = limit
        self._seconds = seconds
        self.body_done = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_done = True
        return message

    async def send(self, message: Message) -> None:
        send = self._send
        if self.body_done:
            await send(message)
            return
        if message["type"] == "http.response.start":
            # The body is not read yet: this connection cannot be reused after the answer.
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
            await send({**message, "headers": [*headers, (b"connection", b"close")]})
            return
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await send({**message, "more_body": True})  # every byte of the answer is out now
            await self._drain()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        await send(message)

    async def _drain(self) -> None:
        """Read and drop the rest of the request body, within the byte and time bounds."""
        read = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._seconds):
                while read <= self._limit:
                    message = await self.receive()
                    if message["type"] != "http.request":
                        return
                    read += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return


def refusal_guard(scope: Scope, receive: Receive, send: Send, *, limit: int) -> RefusalGuard | None:
    """The guard of a request that comes with a body (None for one without: nothing to drain)."""
    if scope["type"] != "http" or not _expects_body(scope):
        return None
    return RefusalGuard(receive, send, limit=limit)


def guarded(scope: Scope, receive: Receive, send: Send, *, limit: int) -> tuple[Receive, Send]:
    """`receive` and `send` for an app that may refuse the request before reading its body."""
    guard = refusal_guard(scope, receive, send, limit=limit)
    return (receive, send) if guard is None else (guard.receive, guard.send)


class DrainRefusedBodies:
    """The middleware form (the router's stack)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, *guarded(scope, receive, send, limit=self.limit))
