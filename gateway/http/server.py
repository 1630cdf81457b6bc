"""uvicorn's httptools protocol, ~3 KB lighter per open SSE stream.

Every `collections.deque` allocates a 64-slot block up front (~600 B), and uvicorn keeps three per
connection: the pipeline of queued requests and the `asyncio.Event`s of its flow control and of the
request cycle. Here they are a list and `LeanEvent` (a list of waiters, empty until someone waits). And the
scope offers `WATCH_DISCONNECT` (`eras/streaming.py`): an SSE response is called back when its
client leaves, instead of holding a task that waits on `receive()` for `http.disconnect`.
And the writes of one event-loop turn leave in one system call (`CorkedTransport`). The HTTP
handling itself is uvicorn's, unchanged. The attributes replaced are uvicorn's internals:
`tests/test_server.py` fails loudly if an upgrade renames them (the pin in pyproject.toml says which
versions were checked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.eras.streaming import WATCH_DISCONNECT


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

    def writelines(self, chunks: Iterable[bytes]) -> None:
        for data in chunks:
            self.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

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


class LeanHttpToolsProtocol(HttpToolsProtocol):
    """`uvicorn.Config(http=LeanHttpToolsProtocol)`: uvicorn's protocol with lighter containers."""

    # Slots, not instance attributes: one more key in uvicorn's instance dict makes CPython resize
    # it to a table of its own when `on_message_begin` adds the next one (+1.4 KB per connection).
    __slots__ = ("_lost", "_on_disconnect")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = Pipeline()  # type: ignore[assignment]
        self._on_disconnect: Callable[[], None] | None = None
        self._lost = False

    def watch_disconnect(self, callback: Callable[[], None] | None) -> None:
        """`WATCH_DISCONNECT`: the open response (there is one at a time) asks to hear of a disconnect."""
        if callback is not None and self._lost:
            self.loop.call_soon(callback)  # the client left before the response began
            return
        self._on_disconnect = callback

    def connection_lost(self, exc: Exception | None) -> None:
        callback, self._on_disconnect = self._on_disconnect, None
        self._lost = True
        super().connection_lost(exc)
        if callback is not None:
            callback()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # uvicorn reads the addresses off the real transport
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]
        flow = self.flow
        flow._is_writable_event = LeanEvent(flow._is_writable_event.is_set())  # type: ignore[assignment]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # Called from the parser before any body callback, and the cycle's task has not run yet:
        # nobody waits on the event, and only its state needs carrying over.
        cycle = self.cycle
        if cycle is not None and isinstance(cycle.message_event, asyncio.Event):
            cycle.message_event = LeanEvent(cycle.message_event.is_set())  # type: ignore[assignment]
            cycle.scope[WATCH_DISCONNECT] = self.watch_disconnect  # type: ignore[literal-required]
