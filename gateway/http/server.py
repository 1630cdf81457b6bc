"""uvicorn's httptools protocol, ~3 KB lighter per open SSE stream.

Every `collections.deque` allocates a 64-slot block up front (~600 B), and uvicorn keeps three per
connection: the pipeline of queued requests and the `asyncio.Event`s of its flow control and of the
request cycle. Here they are a list and `LeanEvent` (a list of waiters, empty until someone waits). And the
scope offers `WATCH_DISCONNECT` (`asgi/streaming.py`): an SSE response is called back when its
client leaves, instead of holding a task that waits on `receive()` for `http.disconnect`.
And the writes of one event-loop turn leave in one system call (`CorkedTransport`). And a whole
response can be written by `RESPOND` (`LeanCycle.respond`): status line, headers and body in one
write, instead of two ASGI messages each checked and encoded by uvicorn's `send`. The rest of the
HTTP handling is uvicorn's, unchanged. The attributes replaced are uvicorn's internals:
`tests/test_server.py` fails loudly if an upgrade renames them (the pin in pyproject.toml says which
versions were checked).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from gateway.asgi.streaming import WATCH_DISCONNECT


class LeanEvent:
    """`asyncio.Event`'s interface (`set`, `clear`, `is_set`, `wait`) with its waiters in a list."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            self._waiters.remove(waiter)


class CorkedTransport:
    """The connection's transport, with the writes of one event-loop turn sent in one system call.

    uvicorn writes a response's status line and headers, then each body chunk, each with its own
    `send()` (~8 us of CPU on loopback): a JSON answer costs two, an SSE burst one per event. The
    writes made in the same turn are joined and written by the loop's next callback, which adds
    no wait (nothing is held for more data: streams stay unbuffered). Everything else is the
    real transport's; `close` sends what is unsent first, `abort` drops it."""

    __slots__ = ("_loop", "_transport", "_unsent")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._unsent: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._unsent:
            self._loop.call_soon(self._flush)
        self._unsent.append(data)

    def _flush(self) -> None:
        unsent = self._unsent
        if unsent:
            self._unsent = []
            if not self._transport.is_closing():
                self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def write_now(self, data: bytes) -> None:
        """`data` after what is unsent, in one system call now: for a response that is whole
        (nothing of it is left to join), a loop turn sooner."""
        unsent = self._unsent
        if unsent:
            unsent.append(data)
            self._flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for data in chunks:
            self.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()  # asked after every read (`http/connections.py`): not by __getattr__

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._unsent)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._unsent = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)  # is_closing, pause_reading, get_extra_info, ...


class Pipeline(list[Any]):
    """The deque operations uvicorn uses on its queue of pipelined requests (rarely more than one)."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


# Scope key our server offers: `scope[RESPOND](scope, status, raw_headers, body)` writes a whole
# response and returns True, or returns False having written nothing (the caller then sends it by
# ASGI). It is the connection's, not the cycle's: a cycle's scope naming its own cycle would make
# each request a reference cycle, left to the garbage collector (+4 % CPU per call, measured).
RESPOND = "mcpgw.respond"
# And `scope[TAKE_BODY](scope)`: the whole request body when all of it has arrived (what `receive`
# would give, once, without its coroutines and message), else None (then read it by `receive`).
TAKE_BODY = "mcpgw.take_body"


class LeanCycle(RequestResponseCycle):
    """uvicorn's request cycle, with `respond`: a whole response in one write, and `take_body`."""

    def take_body(self) -> bytes | None:
        """What the first `receive` returns when the body has all arrived (its message's body,
        with `more_body` false), and the same state after it; None when `receive` must wait (more
        to come, a `100 Continue` to send) or would say `http.disconnect`."""
        if self.more_body or self.waiting_for_100_continue or self.disconnected or self.response_complete:
            return None
        body = bytes(self.body)
        self.body = bytearray()
        self.message_event.clear()
        return body

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """What `send` does for a start message and one final body, checked in one pass.

        Not taken (False, nothing written): a response already begun, a paused writer (`send`
        waits for the drain), a HEAD request, a `transfer-encoding`, or a body that does not
        match its `content-length` (or has none where one is needed): uvicorn's `send` then
        handles it, with its own errors."""
        if self.response_started or self.flow.write_paused or self.scope["method"] == "HEAD":
            return False
        if self.disconnected:
            return True  # as `send`: nothing to write to
        headers = self.default_headers + headers
        length = -1
        has_connection_close = False
        lines = [STATUS_LINE[status]]
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                if length >= 0 or not value.isdigit():
                    return False
                length = int(value)
            elif name == b"transfer-encoding":
                return False
            elif name == b"connection" and b"close" in [token.strip() for token in value.lower().split(b",")]:
                has_connection_close = True
            lines += (name, b": ", value, b"\r\n")
        if length >= 0:
            if length != len(body):
                return False
        elif body or status not in (204, 304):
            return False
        # One search over all names and one over all values: what `send` checks header by header.
        if HEADER_RE.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"\t".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        if has_connection_close:
            self.keep_alive = False
        elif not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines += (b"\r\n", body)
        self.response_started = True
        self.waiting_for_100_continue = False
        transport = self.transport
        if isinstance(transport, CorkedTransport):
            transport.write_now(b"".join(lines))
        else:
            transport.write(b"".join(lines))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
        return True


class LeanHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http=LeanHttpToolsProtocol)`: uvicorn's protocol with lighter containers."""

    # Slots, not instance attributes: one more key in uvicorn's instance dict makes CPython resize
    # it to a table of its own when `on_message_begin` adds the next one (+1.4 KB per connection).
    __slots__ = ("_idle_since", "_lost", "_on_disconnect")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = Pipeline()  # type: ignore[assignment]
        self._on_disconnect: Callable[[], None] | None = None
        self._lost = False
        self._idle_since: float | None = None  # when the last response ended; None while busy

    # Keep-alive: uvicorn arms a timer after every response and cancels it when the next request
    # arrives (a timer started and stopped per request). Here the timer stays armed across
    # requests; when it fires it closes a connection idle for `timeout_keep_alive` since its last
    # response, and otherwise waits for the rest of that time: one timer per connection per period.

    def _unset_keepalive_if_required(self) -> None:
        """What uvicorn's `data_received` calls to cancel the timer: the connection is busy now,
        and the timer is left running (it finds the connection busy when it fires)."""
        self._idle_since = None

    def on_response_complete(self) -> None:
        """uvicorn's, arming the keep-alive timer only when none is armed."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return  # a request is in progress: its response arms the timer again
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def watch_disconnect(self, callback: Callable[[], None] | None) -> None:
        """`WATCH_DISCONNECT`: the open response (there is one at a time) asks to hear of a disconnect."""
        if callback is not None and self._lost:
            self.loop.call_soon(callback)  # the client left before the response began
            return
        self._on_disconnect = callback

    def respond(self, scope: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bool:
        """`RESPOND`: the response of the request whose scope this is, if it is the current one (a
        pipelined request behind it takes the ASGI path)."""
        cycle = self.cycle
        if not isinstance(cycle, LeanCycle) or cycle.scope is not scope:
            return False
        return cycle.respond(status, headers, body)

    def take_body(self, scope: Any) -> bytes | None:
        """`TAKE_BODY`: the body of the request whose scope this is, if it is the current one."""
        cycle = self.cycle
        if not isinstance(cycle, LeanCycle) or cycle.scope is not scope:
            return None
        return cycle.take_body()

    def connection_lost(self, exc: Exception | None) -> None:
        callback, self._on_disconnect = self._on_disconnect, None
        self._lost = True
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:  # what uvicorn's `_unset_keepalive_if_required` did here
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        if callback is not None:
            callback()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # uvicorn reads the addresses off the real transport
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        flow = self.flow
        flow._is_writable_event = LeanEvent(flow._is_writable_event.is_set())  # type: ignore[assignment]

    def app_for(self, scope: Any) -> Any:
        """The app that serves this request: uvicorn's choice (a 503 past `limit_concurrency`);
        `http/connections.py` answers refused requests here."""
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            return service_unavailable
        return self.app

    def on_headers_complete(self) -> None:
        """uvicorn's, building a `LeanCycle` with a `LeanEvent` and offering `WATCH_DISCONNECT`
        and `RESPOND` in the scope."""
        parser = self.parser
        scope = self.scope
        http_version = parser.get_http_version()
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = self.root_path + path
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed_url.query or b""
        app = self.app_for(scope)
        existing_cycle = self.cycle
        self.cycle = cycle = LeanCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=LeanEvent(),  # type: ignore[arg-type]
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        scope[WATCH_DISCONNECT] = self.watch_disconnect  # type: ignore[literal-required]
        scope[RESPOND] = self.respond  # type: ignore[literal-required]
        scope[TAKE_BODY] = self.take_body  # type: ignore[literal-required]
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(cycle, app)
        else:  # pipelined requests are queued up, as uvicorn does
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))
