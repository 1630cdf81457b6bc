"""The raw ASGI SSE response: chunks flushed as they come, a client disconnect ends the body at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.types import Message

from gateway.asgi.streaming import SSEResponse

SCOPE: dict[str, Any] = {"type": "http", "method": "GET", "path": "/mcp", "headers": []}


class Client:
    """The ASGI server's side: what was sent, and a disconnect to deliver on demand."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.received = False
        self.left = asyncio.Event()
        self.got_chunk = asyncio.Event()
        self.send_blocks = asyncio.Event()
        self.send_blocks.set()

    async def receive(self) -> dict[str, Any]:
        if not self.received:
            self.received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        await asyncio.sleep(0)  # a socket write lets other tasks run
        await self.send_blocks.wait()
        self.sent.append(message)
        if message.get("body"):
            self.got_chunk.set()


async def test_chunks_go_out_one_by_one_then_the_end() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    client = Client()
    response = SSEResponse(body(), {"mcp-session-id": "s"})
    await response(SCOPE, client.receive, client.send)
    start, *chunks = client.sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"mcp-session-id", b"s") in start["headers"]
    assert [(m["body"], m["more_body"]) for m in chunks] == [
        (b"data: 1\n\n", True),
        (b"data: 2\n\n", True),
        (b"", False),
    ]


async def test_disconnect_ends_a_waiting_body_and_returns_normally() -> None:
    ended = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await asyncio.Event().wait()  # an idle stream
            yield b"never"
        finally:
            ended.set()

    client = Client()
    call = asyncio.ensure_future(SSEResponse(body())(SCOPE, client.receive, client.send))
    await client.got_chunk.wait()
    client.left.set()
    await asyncio.wait_for(call, 5)
    assert ended.is_set() and call.exception() is None
    assert all(m.get("more_body", True) for m in client.sent)  # no end of body: the client is gone


async def test_disconnect_while_sending_closes_the_body() -> None:
    ended = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b": keep-alive\n\n"
        finally:
            ended.set()

    client = Client()
    call = asyncio.ensure_future(SSEResponse(body())(SCOPE, client.receive, client.send))
    await client.got_chunk.wait()
    client.send_blocks.clear()  # the next send waits (a slow client) ...
    await asyncio.sleep(0.01)
    client.left.set()  # ... and the client leaves meanwhile
    await asyncio.wait_for(call, 5)
    assert ended.is_set() and call.exception() is None


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        await asyncio.Event().wait()
        yield b"never"

    client = Client()
    call = asyncio.ensure_future(SSEResponse(body())(SCOPE, client.receive, client.send))
    await client.got_chunk.wait()
    call.cancel()  # e.g. the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await call


class Slot:
    """A StreamSlot's interface: due every second chunk; what was called, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._chunks = 0

    def due(self) -> bool:
        self._chunks += 1
        return self._chunks % 2 == 0

    async def refresh(self) -> None:
        self.calls.append("refresh")

    async def release(self) -> None:
        self.calls.append("release")


async def test_the_slot_is_refreshed_while_open_and_released_once_at_the_end() -> None:
    async def body() -> AsyncIterator[bytes]:
        for i in range(4):
            yield b"data: %d\n\n" % i

    slot, client = Slot(), Client()
    await SSEResponse(body(), None, slot)(SCOPE, client.receive, client.send)
    assert slot.calls == ["refresh", "refresh", "release"]


async def test_the_slot_is_released_when_the_client_leaves() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        await asyncio.Event().wait()

    slot, client = Slot(), Client()
    task = asyncio.ensure_future(SSEResponse(body(), None, slot)(SCOPE, client.receive, client.send))
    await client.got_chunk.wait()
    client.left.set()
    await task
    assert slot.calls == ["release"]
