"""The metrics listener: `GET /metrics` on its own address, never on the MCP port.

Metrics say how many sessions, streams and upstream instances a replica has: operators' business,
not every client's (issue 35). A separate listener (`--metrics-host`, `--metrics-port`) lets the
MCP port face the internet while only the scraper reaches this one. It is a bare asyncio protocol:
one request per connection, at most `MAX_REQUEST` bytes, answered or dropped within `DEADLINE`
seconds, and no task per connection (nothing to own past `aclose`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("gateway.http.scrape")

MAX_REQUEST = 8192  # bytes of request head accepted
DEADLINE = 10.0  # s a scrape connection may stay open


def _answer(status: str, content_type: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    head += "Connection: close\r\n\r\n"
    return head.encode("latin-1") + body


def answer(head: bytes, render: Callable[[], bytes]) -> bytes:
    """The whole response to one request head (sans-IO: tested with plain bytes)."""
    line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
        return _answer("400 Bad Request", "text/plain", b"bad request\n")
    method, target = line[0], line[1].split(b"?", 1)[0]
    if target != b"/metrics":
        return _answer("404 Not Found", "text/plain", b"not found: this listener serves /metrics only\n")
    if method not in (b"GET", b"HEAD"):
        return _answer("405 Method Not Allowed", "text/plain", b"method not allowed\n")
    response = _answer("200 OK", CONTENT_TYPE_LATEST, render())
    return response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == b"HEAD" else response


class _Scrape(asyncio.Protocol):
    def __init__(self, listener: MetricsListener) -> None:
        self._listener = listener
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._listener.open.add(self)
        self._timer = asyncio.get_running_loop().call_later(DEADLINE, self.abort)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n\r\n" in self._buffer:
            self._reply(answer(self._buffer, self._listener.render))
        elif len(self._buffer) > MAX_REQUEST:
            self._reply(_answer("431 Request Header Fields Too Large", "text/plain", b"too large\n"))

    def _reply(self, response: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(response)
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._listener.open.discard(self)


class MetricsListener:
    """Owned by the app lifespan: `start` binds (a taken port fails start-up), `aclose` unbinds."""

    def __init__(self, render: Callable[[], bytes], *, host: str, port: int, reuse_port: bool = False) -> None:
        self.render = render
        self._host = host
        self._port = port
        self._reuse_port = reuse_port  # --workers N: the workers share the port, as they share the MCP one
        self._server: asyncio.Server | None = None
        self.open: set[_Scrape] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Scrape(self), self._host, self._port, reuse_port=self._reuse_port or None
        )
        log.info("metrics served on http://%s:%d/metrics", self._host, self.port)

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one the system chose for 0 in tests)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for scrape in list(self.open):
                scrape.abort()
            await self._server.wait_closed()
