"""An SSE response sent straight over ASGI, one small watcher task per open stream.

Starlette's StreamingResponse relays its body in a second task under an anyio task group (a
cancel scope, the group, the task and its wrappers, for every open stream) while the
request's task waits for the client's `http.disconnect`. Here the body runs in the request's
own task: each chunk is sent as it comes (`more_body=True`, nothing buffered), and one small
task waits for `http.disconnect` and cancels the request's task, so a client that leaves ends
its delivery at once, as before (the body's `finally` clauses run, then the response returns
normally). A cancellation from anyone else (server shutdown) is not swallowed. A server that
offers `WATCH_DISCONNECT` in the scope (the gateway's, `http/server.py`) calls back on disconnect
instead, and no watcher task is needed (docs/decisions/0009).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.wire import protocol


class Slot(Protocol):
    """A client's admitted open stream (`asgi/responses.py` StreamSlot): re-announced while the
    response is open, released once when it ends. Held by the response, not a generator wrapper."""

    def due(self) -> bool: ...

    async def refresh(self) -> None: ...

    async def release(self) -> None: ...


# Scope key a server may offer: `scope[WATCH_DISCONNECT](callback)` has `callback()` called once
# if the client disconnects before the response completes; `(None)` withdraws it.
WATCH_DISCONNECT = "mcpgw.watch_disconnect"


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # the request's (empty or already read) body: only the disconnect matters


class SSEResponse(Response):
    media_type = protocol.SSE

    def __init__(
        self, body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None, slot: Slot | None = None
    ) -> None:
        self.body_iterator = body
        self.slot = slot
        self.status_code = 200
        self.background = None
        self.init_headers(headers)  # content-type `text/event-stream; charset=utf-8`, as before

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        departure = _Departure(task)
        watch: Callable[[Callable[[], None] | None], None] | None = scope.get(WATCH_DISCONNECT)
        watcher: asyncio.Task[None] | None = None
        if watch is not None:
            watch(departure.leave)
        else:
            watcher = asyncio.get_running_loop().create_task(_until_disconnect(receive))
            watcher.add_done_callback(departure.watcher_done)
        try:
            # The header list is not kept for the stream's life (docs/decisions/0009).
            headers, self.raw_headers = self.raw_headers, []
            await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
            del headers
            slot = self.slot
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if slot is not None and slot.due():
                    await slot.refresh()
            departure.streaming = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not departure.left or task.uncancel() > 0:
                raise
            # Cancelled in `send` rather than inside the body: the body is suspended, close it now
            # (a body the cancellation went through is closed already; this is then a no-op).
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            departure.streaming = False
            if watcher is not None:
                watcher.cancel()
            elif watch is not None:
                watch(None)
            if self.slot is not None:
                await asyncio.shield(self.slot.release())


class _Departure:
    """Whether the client left mid-stream (and its task was cancelled for it): one small object
    per open stream instead of two closures and their cells (docs/decisions/0009)."""

    __slots__ = ("left", "streaming", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.streaming = True
        self.left = False

    def leave(self) -> None:
        if self.streaming:
            self.left = True
            self.task.cancel()

    def watcher_done(self, watcher: asyncio.Task[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            self.leave()
