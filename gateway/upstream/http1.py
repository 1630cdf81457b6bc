"""A lean HTTP/1.1 client for the request path: keep-alive connections per upstream, httptools parsing.

Why not aiohttp here: the gateway forwards one request and relays one response, with headers it
already built; aiohttp's per-request machinery (auto headers, cookies, tracing, request info, its
own timers) cost about as much CPU as all the gateway's own work (bench/README.md, "choices by
measurement"). This module does only what the proxy needs: write the request in one buffer, parse
the response with httptools (llhttp, uvicorn's parser), hand out the body as it arrives with flow
control, and keep the connection when the message ended cleanly (aiohttp: health probes, JWKS).

Failures (`upstream/failures.py`: `ConnectFailed` when nothing was sent, `ProtocolFailure`, `PoolBusy`)
and timeouts are translated into the gateway's error tree by `gateway/upstream/client.py`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict

from gateway.timers import EXACT, Cancellable, Timers
from gateway.upstream.failures import ConnectFailed, PoolBusy, ProtocolFailure

MAX_BUFFER = 256 * 1024  # unread body bytes before reading from the socket pauses
MAX_IDLE = 4.0  # seconds an idle connection is reused; older ones are closed (servers close them ~5 s)


class _Connection(asyncio.Protocol):
    """One TCP connection; carries one exchange at a time."""

    __slots__ = ("_pool", "_response", "closed", "idle_since", "key", "loop", "transport")

    def __init__(self, pool: Http1Pool, key: tuple[str, int, bool]) -> None:
        self._pool = pool
        self.key = key
        # Kept: CPython 3.11's asyncio.get_running_loop() makes a getpid() system call each time.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._response: Response | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # bytes while idle: the upstream misbehaves; do not reuse
            self.close()
            return
        try:
            response._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(ProtocolFailure(f"malformed upstream response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response, self._response = self._response, None
        if response is not None:
            response._lost(exc)
        self._pool._forget(self)

    def pause_writing(self) -> None:  # request bodies are small and written at once
        pass

    # --- exchange -------------------------------------------------------------------------------
    def start(self, response: Response, request: bytes) -> None:
        self._response = response
        if self.transport is None or self.closed:
            response._fail(ProtocolFailure("upstream connection closed before the request was sent"))
            return
        self.transport.write(request)

    def finished(self, response: Response, reusable: bool) -> None:
        if self._response is response:
            self._response = None
        if reusable and not self.closed:
            self.resume()
            self._pool._release(self)
        else:
            self.close()

    def resume(self) -> None:
        if self.transport is not None and not self.closed and not self.transport.is_reading():
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Response:
    """An upstream response whose headers arrived; the body streams (`chunks`) or is `read` whole."""

    # slots: one per stream for its whole life (an instance dict costs ~0.1 KB more)
    __slots__ = ("_buffered", "_chunks", "_complete", "_connection", "_error", "_framed", "_headers_done",
                 "_parser", "_released", "_waiter", "headers", "status")  # fmt: skip

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self._headers_done: asyncio.Future[None] = connection.loop.create_future()
        self._chunks: list[bytes] = []  # what arrived since the last read (a deque's block costs ~600 B)
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: BaseException | None = None
        self._released = False
        self._framed = False  # the body has a length or chunked framing (else it ends at close)

    # --- httptools callbacks ---------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._framed = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")
        if 100 <= self.status < 200 and self.status != 101:
            self.headers = CIMultiDict()  # an interim response: the real one follows
            return
        if not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > MAX_BUFFER and self._connection.transport is not None:
            self._connection.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and self.status != 101:
            return
        self._complete = True
        self._wake()
        keep = self._parser.should_keep_alive()
        if not self._released:
            self._released = True
            self._connection.finished(self, reusable=keep)

    # --- connection events -----------------------------------------------------------------------
    def _lost(self, exc: Exception | None) -> None:
        if self._complete:
            return
        if self._headers_done.done() and not self._framed and exc is None:
            self._complete = True  # a body delimited by the connection's close (RFC 9112 §6.3)
        else:
            self._fail(ProtocolFailure(f"upstream closed the connection mid-response: {exc or 'EOF'}"))
        self._released = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if not self._headers_done.done():
            self._headers_done.set_exception(exc)
            self._headers_done.exception()  # retrieved: no "never retrieved" warning if nobody waits
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # --- consumer side ---------------------------------------------------------------------------
    async def wait_headers(self, timeout: float | None = None) -> None:
        """Until the headers arrived; TimeoutError past `timeout` s (on a timer of the pool's)."""
        done = self._headers_done
        if timeout is None or done.done():
            await done
            return
        timer = self._connection._pool.timers.call_later(max(timeout, 0.0), _time_out, done)
        try:
            await done
        finally:
            timer.cancel()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; ends at the end of the message, raises if it broke."""
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def next_chunk(self, timeout: float | None = None) -> bytes | None:
        """Everything that arrived since the last read, at once (bytes that came together stay
        together: the pump logs them in one write); None at the end of the message; raises if it
        broke, TimeoutError past `timeout` s. A coroutine, not a generator: a long-lived reader
        (the pump) holds no generator, timeout context or timer between reads."""
        while True:
            if self._chunks:
                return self.take_buffered()
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            waiter = self._waiter = self._connection.loop.create_future()
            timer: Cancellable | None = None
            if timeout is not None:  # an idle stream's long wait shares a coarse timer
                timer = self._connection._pool.timers.call_later(timeout, _time_out, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    def take_buffered(self) -> bytes:
        """Everything that arrived since the last read, without waiting (b"" when nothing did)."""
        chunks = self._chunks
        if not chunks:
            return b""
        chunk = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if not self._complete:
            self._connection.resume()
        return chunk

    def close(self) -> None:
        """Done with the response: an unfinished one closes its connection (the upstream sees it)."""
        if not self._released:
            self._released = True
            self._connection.finished(self, reusable=False)
        self._chunks.clear()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _header_block(headers: Mapping[str, str]) -> bytes:
    """`Name: value` lines, refusing a line break in a name or value, or a colon in a name (header
    injection); checked over all names and all values at once, encoded once."""
    names, values = "".join(headers), "".join(headers.values())
    if "\r" in names or "\n" in names or ":" in names or "\r" in values or "\n" in values:
        bad = [n for n, v in headers.items() if "\r" in n + v or "\n" in n + v or ":" in n]
        raise ProtocolFailure(f"refusing a header with a line break or colon: {bad[0]!r}")
    return "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode("latin-1", "replace")


class Http1Pool:
    """Keep-alive connections per (host, port, tls); at most `limit_per_host` open per upstream."""

    def __init__(
        self, *, connect_timeout: float, limit_per_host: int, timers: Timers = EXACT, acquire_timeout: float = 5.0
    ) -> None:
        self.timers = timers  # for a body read's timeout
        self._connect_timeout = connect_timeout
        self._acquire_timeout = acquire_timeout
        self._limit = limit_per_host
        self._idle: dict[tuple[str, int, bool], list[_Connection]] = {}
        self._open: dict[tuple[str, int, bool], int] = {}
        self._waiters: dict[tuple[str, int, bool], deque[asyncio.Future[None]]] = {}
        self._targets: dict[str, tuple[tuple[str, int, bool], bytes]] = {}  # url -> (key, request-target + Host)
        self._ssl: ssl.SSLContext | None = None
        self._all: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the first request

    def _target(self, url: str) -> tuple[tuple[str, int, bool], bytes]:
        cached = self._targets.get(url)
        if cached is None:
            parts = urlsplit(url)
            tls = parts.scheme == "https"
            host = parts.hostname or "localhost"
            port = parts.port or (443 if tls else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            default = port == (443 if tls else 80)
            netloc = (f"[{host}]" if ":" in host else host) + ("" if default else f":{port}")
            cached = ((host, port, tls), f" {path} HTTP/1.1\r\nHost: {netloc}\r\n".encode("latin-1"))
            if len(self._targets) < 10_000:
                self._targets[url] = cached
        return cached

    async def request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float | None = None
    ) -> Response:
        """Send a GET, POST or DELETE (never HEAD: its response has no body); return once the
        response headers arrived, within `timeout` s (TimeoutError; None: unbounded). With an idle
        connection at hand the bound is a pool timer, not an `asyncio.timeout` (~2 % of a call)."""
        key, target = self._target(url)
        lines = [method.encode("ascii"), target, _header_block(headers)]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: %d\r\n" % len(body or b""))
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        loop = self._loop
        if loop is None:  # kept: CPython 3.11's get_running_loop() makes a getpid() system call
            loop = self._loop = asyncio.get_running_loop()
        started = loop.time()
        connection = self._take_idle(key, started)
        if connection is None:  # wait for a free connection, or open one, within the same bound
            async with asyncio.timeout(timeout):
                connection = await self._acquire(key)
        response = Response(connection)
        connection.start(response, b"".join(lines))
        try:
            await response.wait_headers(None if timeout is None else timeout - (loop.time() - started))
        except BaseException:
            response.close()
            raise
        return response

    async def _acquire(self, key: tuple[str, int, bool]) -> _Connection:
        """No idle connection was at hand (`request` just looked): wait for one or open one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._acquire_timeout
        while self._open.get(key, 0) >= self._limit:
            waiter = loop.create_future()
            self._waiters.setdefault(key, deque()).append(waiter)
            try:
                # A pool held by streams answers 503 at the deadline, never leaves a request hanging.
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise PoolBusy(f"no free connection to {key[0]}:{key[1]} within {self._acquire_timeout:g} s") from None
            finally:
                if not waiter.done():
                    waiter.cancel()
            if (connection := self._take_idle(key, loop.time())) is not None:
                return connection
        self._open[key] = self._open.get(key, 0) + 1
        try:
            return await self._connect(key)
        except BaseException:
            self._open[key] -= 1
            self._wake_one(key)
            raise

    def _take_idle(self, key: tuple[str, int, bool], now: float) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if now - connection.idle_since > MAX_IDLE:
                connection.close()  # the upstream may be closing it right now: do not race it
                continue
            return connection
        return None

    async def _connect(self, key: tuple[str, int, bool]) -> _Connection:
        host, port, tls = key
        if tls and self._ssl is None:
            self._ssl = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, key),
                    host,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                )
        except OSError as exc:  # a connect timeout stays a TimeoutError (504, as for a slow answer)
            raise ConnectFailed(exc.errno, f"cannot connect to {host}:{port}: {exc}") from exc
        self._all.add(protocol)
        return protocol

    def _release(self, connection: _Connection) -> None:
        connection.idle_since = connection.loop.time()
        self._idle.setdefault(connection.key, []).append(connection)
        self._wake_one(connection.key)

    def _forget(self, connection: _Connection) -> None:
        if connection in self._all:
            self._all.discard(connection)
            self._open[connection.key] -= 1
            idle = self._idle.get(connection.key)
            if idle and connection in idle:
                idle.remove(connection)
            self._wake_one(connection.key)

    def open_connections(self) -> int:
        """Connections open now, idle or carrying an exchange (a stream holds one for its life)."""
        return len(self._all)

    def _wake_one(self, key: tuple[str, int, bool]) -> None:
        waiters = self._waiters.get(key)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports report connection_lost
