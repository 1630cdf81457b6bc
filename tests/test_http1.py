"""gateway.upstream.http1 against raw asyncio servers: framing, keep-alive reuse, breaks, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.timers import CoarseTimers
from gateway.upstream import failures, http1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/mcp"

    yield start
    for server in servers:
        server.close()


async def _body(response: http1.Response) -> bytes:
    return b"".join([chunk async for chunk in response.iter_chunks()])


async def test_content_length_and_keep_alive_reuse(serve: Callable[[Handler], Awaitable[str]]) -> None:
    connections = 0
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                requests.append(await _read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    url = await serve(handler)
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=4)
    try:
        for _ in range(3):
            response = await pool.request("POST", url, {"X-Test": "1"}, b'{"a":1}')
            assert response.status == 200 and response.headers["content-type"] == "application/json"
            assert await _body(response) == b"{}"
    finally:
        await pool.close()
    assert connections == 1  # one keep-alive connection served all three
    assert requests[0].startswith(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-Test: 1\r\n" in requests[0] and b"Content-Length: 7\r\n" in requests[0]
    assert requests[0].endswith(b'\r\n\r\n{"a":1}')


async def test_chunked_stream_arrives_as_it_is_written(serve: Callable[[Handler], Awaitable[str]]) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    url = await serve(handler)
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=4)
    try:
        response = await pool.request("GET", url, {}, None)
        chunks = response.iter_chunks()
        assert await anext(chunks) == b"data: 1"  # before the upstream wrote the rest
        release.set()
        assert [c async for c in chunks] == [b"data: 2"]
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        # no length, no chunking: the body is everything until the server closes
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nall of it", b"all of it"),
        # a declared length the close cuts short: a failure, never a short body
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part", None),
    ],
    ids=["delimited-by-close", "lost-mid-body"],
)
async def test_a_body_ended_by_the_connection_closing(
    serve: Callable[[Handler], Awaitable[str]], raw: bytes, body: bytes | None
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()

    url = await serve(handler)
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=4)
    try:
        response = await pool.request("GET", url, {}, None)
        if body is None:
            with pytest.raises(failures.ProtocolFailure):
                await _body(response)
        else:
            assert await _body(response) == body
    finally:
        await pool.close()


async def test_refused_connection_is_connect_failed() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=4)
    with pytest.raises(failures.ConnectFailed):
        await pool.request("GET", f"http://127.0.0.1:{port}/mcp", {}, None)
    await pool.close()


async def test_header_injection_is_refused(serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    url = await serve(handler)
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=4)
    for evil in ({"X-Evil": "a\r\nInjected: yes"}, {"X-Ok": "1", "X-Evil": "a\nb"}, {"X-Evil: yes": "a"}):
        with pytest.raises(failures.ProtocolFailure, match="X-Evil"):  # the offending header is named
            await pool.request("GET", url, evil, None)
    await pool.close()


async def test_connections_per_host_are_bounded(serve: Callable[[Handler], Awaitable[str]]) -> None:
    open_now = peak = 0
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            while True:
                try:
                    await _read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                await gate.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        finally:
            open_now -= 1

    url = await serve(handler)
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=2)

    async def one() -> int:
        response = await pool.request("GET", url, {}, None)
        await _body(response)
        return response.status

    try:
        calls = [asyncio.ensure_future(one()) for _ in range(6)]
        await asyncio.sleep(0.2)
        gate.set()
        assert await asyncio.gather(*calls) == [200] * 6
    finally:
        await pool.close()
    assert peak == 2


async def test_next_chunk_waits_within_a_bound(serve: Callable[[Handler], Awaitable[str]]) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    url = await serve(handler)
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=4)
    try:
        response = await pool.request("GET", url, {}, None)
        assert await response.next_chunk(5) == b"data: 1"
        with pytest.raises(TimeoutError):
            await response.next_chunk(0.05)  # nothing more yet: the bound passes, the response stays usable
        release.set()
        assert await response.next_chunk(5) == b"data: 2"
        assert await response.next_chunk(5) is None  # the end of the message
    finally:
        await pool.close()


async def test_a_request_is_bounded_while_it_waits_for_headers_and_for_a_connection(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    """The bound covers the wait for the answer's headers (a pool timer) and, with every
    connection busy, the wait for one (an asyncio.timeout): TimeoutError, and nothing leaks."""
    gate = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await _read_request(reader)
                await gate.wait()  # answers only once the test lets it
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    url = await serve(handler)
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=1)
    try:
        gate.set()
        await _body(await pool.request("GET", url, {}, None))  # no bound; leaves an idle connection
        gate.clear()
        with pytest.raises(TimeoutError):  # an idle connection at hand: the timer bounds the headers
            await pool.request("GET", url, {}, None, timeout=0.2)
        held = asyncio.ensure_future(pool.request("GET", url, {}, None))  # takes the only connection
        await asyncio.sleep(0.1)
        with pytest.raises(TimeoutError):  # every connection busy: bounded while it waits for one
            await pool.request("GET", url, {}, None, timeout=0.2)
        gate.set()
        await _body(await held)
        again = await pool.request("GET", url, {}, None, timeout=2)  # the pool still serves
        await _body(again)
        assert again.status == 200
    finally:
        await pool.close()


async def test_a_request_on_an_idle_connection_does_not_ask_for_the_running_loop(
    serve: Callable[[Handler], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPython 3.11's `asyncio.get_running_loop()` makes a getpid() system call: the pool keeps
    the loop of its first request (and each connection its own) instead of asking per request."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    url = await serve(handler)
    # the app's timers (they keep their loop too); the default ones ask for it on every wait
    pool = http1.Http1Pool(connect_timeout=2, limit_per_host=4, timers=CoarseTimers(asyncio.get_running_loop()))
    try:
        first = await pool.request("POST", url, {}, b"{}", timeout=5)
        assert await _body(first) == b"{}"
        asked = 0
        real = asyncio.get_running_loop

        def counting() -> asyncio.AbstractEventLoop:
            nonlocal asked
            asked += 1
            return real()

        monkeypatch.setattr("gateway.upstream.http1.asyncio.get_running_loop", counting)
        for _ in range(3):
            response = await pool.request("POST", url, {}, b"{}", timeout=5)
            assert response.status == 200 and await _body(response) == b"{}"
        assert asked == 0
    finally:
        await pool.close()
