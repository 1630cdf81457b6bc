"""gateway.http.server: uvicorn's protocol with lighter containers, fed bytes through a fake
transport (no sockets). If a uvicorn upgrade renames what is replaced, these fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.asgi.streaming import SSEResponse
from gateway.http.server import RESPOND, TAKE_BODY, CorkedTransport, LeanEvent, LeanHttpToolsProtocol, Pipeline
from tests.asgi_server import read_body


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes: list[bytes] = []  # one item per system call a real transport would make
        self.closed = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.writes.append(bytes(data))

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0  # everything written is gone at once

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": scope["path"].encode() + b":" + body})


def protocol(
    app: Any = echo, default_headers: list[tuple[bytes, bytes]] | None = None, keep_alive: float = 5
) -> tuple[LeanHttpToolsProtocol, FakeTransport]:
    """The lean protocol serving `app` on a fake transport (`default_headers`: uvicorn's Server
    sets them; a bare ServerState has none)."""
    # uvicorn annotates the keep-alive as int, yet only hands it to `loop.call_later`: a fraction works
    config = uvicorn.Config(
        app,
        http=LeanHttpToolsProtocol,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=keep_alive,  # type: ignore[arg-type]
    )
    config.load()
    state = ServerState()
    if default_headers is not None:
        state.default_headers = default_headers
    proto = LeanHttpToolsProtocol(config=config, server_state=state, app_state={})
    transport = FakeTransport()
    proto.connection_made(transport)
    return proto, transport


async def settle(transport: FakeTransport, responses: int) -> None:
    for _ in range(200):
        if transport.written.count(b"HTTP/1.1 200") >= responses:
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"expected {responses} responses, got {bytes(transport.written)!r}")


def kind(value: object) -> type:
    """The runtime class of `value`: uvicorn declares a deque, an asyncio.Event and a Transport where
    the lean protocol puts duck-typed stand-ins, so the declared type cannot be compared with them."""
    return type(value)


async def test_the_containers_are_replaced_and_a_request_is_served() -> None:
    proto, transport = protocol()
    assert kind(proto.pipeline) is Pipeline
    assert kind(proto.flow._is_writable_event) is LeanEvent and proto.flow._is_writable_event.is_set()
    # the body arrives in a second packet: the cycle's task waits on its (lean) event for it
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
    assert kind(proto.cycle.message_event) is LeanEvent
    await asyncio.sleep(0.01)
    proto.data_received(b"llo")
    await settle(transport, 1)
    assert b"\r\n/mcp:hello\r\n" in transport.written  # chunked: the whole body, after its size


async def test_pipelined_requests_are_answered_in_order() -> None:
    proto, transport = protocol()
    proto.data_received(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n2"
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n3"
    )
    await settle(transport, 3)
    out = bytes(transport.written)
    assert out.index(b"/a:1") < out.index(b"/b:2") < out.index(b"/c:3")
    assert not proto.pipeline


REQUEST = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    proto, transport = protocol(keep_alive=0.05)
    proto.data_received(REQUEST)
    await settle(transport, 1)
    assert not transport.closed
    await until(lambda: transport.closed)


async def test_one_keep_alive_timer_serves_many_requests_and_counts_from_the_last_answer() -> None:
    """The timer armed after the first answer is not replaced by the next requests; when it fires
    it waits for the rest of the timeout counted from the last answer, then closes."""
    loop = asyncio.get_running_loop()
    proto, transport = protocol(keep_alive=0.2)
    proto.data_received(REQUEST)
    await settle(transport, 1)
    timer = proto.timeout_keep_alive_task
    assert timer is not None
    await asyncio.sleep(0.1)
    proto.data_received(REQUEST)
    await settle(transport, 2)
    last_answer = loop.time()
    assert proto.timeout_keep_alive_task is timer  # the same timer: none armed or cancelled per request
    await until(lambda: proto.timeout_keep_alive_task is not timer)  # the first one fired...
    assert not transport.closed  # ...0.1 s after the last answer: not idle long enough
    await until(lambda: transport.closed)
    assert loop.time() - last_answer >= 0.19


async def test_a_connection_with_a_request_in_progress_is_not_closed_for_keep_alive() -> None:
    proto, transport = protocol(keep_alive=0.05)
    proto.data_received(REQUEST)
    await settle(transport, 1)
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\n")  # the next request, still arriving
    await until(lambda: proto.timeout_keep_alive_task is None)  # fired, found it busy, not re-armed
    assert not transport.closed
    proto.data_received(b"Content-Length: 0\r\n\r\n")
    await settle(transport, 2)
    await until(lambda: transport.closed)  # idle again: the timer is armed again


async def test_a_lost_connection_cancels_its_keep_alive_timer() -> None:
    proto, transport = protocol(keep_alive=5)
    proto.data_received(REQUEST)
    await settle(transport, 1)
    timer = proto.timeout_keep_alive_task
    assert timer is not None
    proto.connection_lost(None)
    assert proto.timeout_keep_alive_task is None and timer.cancelled()


async def test_a_sized_answer_leaves_in_one_write() -> None:
    """Status line, headers and body of a JSON-sized answer: one send(), not one per ASGI message."""

    async def sized(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    proto, transport = protocol(sized)
    assert kind(proto.transport) is CorkedTransport
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await settle(transport, 1)
    (write,) = transport.writes
    assert write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"\r\n\r\nok")


async def test_corked_writes_of_one_turn_are_joined_and_close_sends_the_rest() -> None:
    transport = FakeTransport()
    corked = CorkedTransport(transport, asyncio.get_running_loop())
    corked.write(b"a")
    corked.writelines([b"b", b"c"])  # corked too: nothing overtakes what is unsent
    assert transport.writes == [] and corked.get_write_buffer_size() == 3
    await asyncio.sleep(0)  # the loop's next callback writes the turn's bytes
    assert transport.writes == [b"abc"]
    corked.write(b"d")  # a later turn: its own write, never held back for more
    await asyncio.sleep(0)
    corked.write(b"e")
    corked.close()  # what is unsent goes out before the close
    assert transport.writes == [b"abc", b"d", b"e"] and transport.closed
    await asyncio.sleep(0)
    corked.write(b"late")  # after the close: never written
    await asyncio.sleep(0)
    assert transport.writes == [b"abc", b"d", b"e"]  # the scheduled flush found nothing to send


async def test_write_now_sends_what_is_unsent_and_its_bytes_at_once() -> None:
    transport = FakeTransport()
    corked = CorkedTransport(transport, asyncio.get_running_loop())
    corked.write_now(b"whole")
    assert transport.writes == [b"whole"]  # no loop turn waited for
    corked.write(b"a")
    corked.write_now(b"b")  # behind what was unsent, in the same system call
    assert transport.writes == [b"whole", b"ab"]
    await asyncio.sleep(0)
    assert transport.writes == [b"whole", b"ab"]  # the scheduled flush found nothing left
    corked.close()
    corked.write_now(b"late")
    assert transport.writes == [b"whole", b"ab"]


async def test_an_aborted_corked_transport_drops_what_is_unsent() -> None:
    transport = FakeTransport()
    corked = CorkedTransport(transport, asyncio.get_running_loop())
    corked.write(b"x")
    corked.abort()
    await asyncio.sleep(0)
    assert transport.writes == [] and corked.is_closing()


async def test_lean_event_wakes_every_waiter_and_forgets_cancelled_ones() -> None:
    event = LeanEvent()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.sleep(0)
    assert len(event._waiters) == 2
    event.set()
    assert await asyncio.gather(*waiters[1:]) == [True, True]
    assert event._waiters == [] and event.is_set()
    assert await event.wait()  # already set: no waiting
    event.clear()
    assert not event.is_set()
    late = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not late.done()
    event.set()
    assert await late


def sse_app(ended: list[str]) -> Any:
    """An SSE response whose body waits forever after its first event; `ended` records its finally."""

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: 1\n\n"
            await asyncio.Event().wait()
        finally:
            ended.append("body closed")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await SSEResponse(body())(scope, receive, send)
        ended.append("response returned")

    return app


def sse_protocol(ended: list[str]) -> tuple[LeanHttpToolsProtocol, FakeTransport]:
    return protocol(sse_app(ended))


async def until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail("condition not reached")


async def test_a_client_that_leaves_ends_its_sse_response_without_a_watcher_task() -> None:
    ended: list[str] = []
    proto, transport = sse_protocol(ended)
    before = len(asyncio.all_tasks())
    proto.data_received(b"GET /mcp HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    await until(lambda: b"data: 1" in transport.written)
    assert proto._on_disconnect is not None
    assert len(asyncio.all_tasks()) == before + 1  # the request's task only: no disconnect watcher
    proto.connection_lost(None)
    await until(lambda: "response returned" in ended)
    assert ended == ["body closed", "response returned"]
    assert proto._on_disconnect is None


async def test_a_client_gone_before_the_response_began_ends_it_at_once() -> None:
    ended: list[str] = []
    proto, transport = sse_protocol(ended)
    proto.data_received(b"GET /mcp HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    proto.connection_lost(None)  # before the request's task ran
    await until(lambda: "response returned" in ended)
    assert ended[-1] == "response returned"
    assert proto._on_disconnect is None
    assert b"data: 1" not in transport.written  # nothing went to the client that left


def responding(status: int, headers: list[tuple[bytes, bytes]], body: bytes, taken: list[bool]) -> Any:
    """An app answering through `RESPOND`, and by ASGI when it is not taken."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        done = scope[RESPOND](scope, status, headers, body)
        taken.append(done)
        if not done:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    return app


def respond_protocol(app: Any) -> tuple[LeanHttpToolsProtocol, FakeTransport]:
    return protocol(app, [(b"date", b"Thu, 03 Dec 2026 14:00:00 GMT"), (b"server", b"uvicorn")])


async def test_respond_writes_a_whole_answer_once_and_keeps_the_connection() -> None:
    taken: list[bool] = []
    proto, transport = respond_protocol(
        responding(200, [(b"content-type", b"application/json"), (b"content-length", b"2")], b"{}", taken)
    )
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await until(lambda: taken)
    (write,) = transport.writes  # written by `respond` itself, not by a later loop turn
    head, body = write.split(b"\r\n\r\n")
    assert taken == [True] and body == b"{}"
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\ncontent-length: 2" in head
    assert b"\r\ndate: " in head and b"\r\nserver: uvicorn" in head  # uvicorn's default headers too
    assert b"connection: close" not in head and not transport.closed
    assert proto.cycle.response_complete and proto.timeout_keep_alive_task is not None  # as after `send`
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")  # the same connection
    await settle(transport, 2)
    assert taken == [True, True]


async def test_respond_closes_when_the_client_or_the_answer_says_so() -> None:
    taken: list[bool] = []
    proto, transport = respond_protocol(responding(202, [(b"content-length", b"0")], b"", taken))
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    await until(lambda: taken)
    await asyncio.sleep(0)
    assert taken == [True] and transport.closed
    assert b"\r\nconnection: close\r\n\r\n" in transport.written  # added, as uvicorn's `send` does

    taken = []
    headers = [(b"Connection", b"close"), (b"content-length", b"1")]
    proto, transport = respond_protocol(responding(200, headers, b"x", taken))
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await until(lambda: taken)
    await asyncio.sleep(0)
    assert taken == [True] and transport.closed
    assert bytes(transport.written).count(b"connection: close") == 1  # the answer's own, not twice


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([(b"content-length", b"5")], b"{}"),  # does not match: uvicorn's send raises its error
        ([(b"transfer-encoding", b"chunked")], b""),
        ([], b"{}"),  # no length: uvicorn chunks it
    ],
)
async def test_respond_leaves_to_asgi_what_it_does_not_write_whole(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    taken: list[bool] = []
    proto, transport = respond_protocol(responding(200, headers, body, taken))
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await until(lambda: taken)
    await asyncio.sleep(0.01)
    assert taken == [False]  # nothing written by `respond`: what follows is uvicorn's `send`
    assert bytes(transport.written).count(b"HTTP/1.1") == 1


async def test_respond_refuses_header_injection_as_send_does() -> None:
    errors: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            scope[RESPOND](scope, 200, [(b"x-a", b"ok\r\nset-cookie: evil"), (b"content-length", b"0")], b"")
        except RuntimeError as exc:
            errors.append(str(exc))
            raise

    proto, transport = respond_protocol(app)
    proto.data_received(b"GET /mcp HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: errors)
    await settle_any(transport)
    assert errors == ["Invalid HTTP header value."]
    assert b"evil" not in transport.written and transport.written.startswith(b"HTTP/1.1 500 ")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Type", b"application/json"), (b"X-Mixed-Case", b"A b"), (b"content-length", b"2")],
        [(b"connection", b"keep-alive, Close"), (b"content-length", b"2")],
        [(b"connection", b"keep-alive"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"content-length", b"2")],
        [(b"content-length", b"2"), (b"x-empty", b"")],
    ],
)
@pytest.mark.parametrize("close", [False, True])
async def test_respond_writes_the_bytes_uvicorns_send_writes(headers: list[tuple[bytes, bytes]], close: bool) -> None:
    request = b"POST /mcp HTTP/1.1\r\nHost: x\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    taken: list[bool] = []

    async def by_send(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})
        taken.append(False)

    written: list[tuple[bytes, bool]] = []
    for app in (responding(200, headers, b"{}", taken), by_send):
        proto, transport = respond_protocol(app)
        proto.data_received(request)
        await until(lambda: len(taken) == len(written) + 1)
        await asyncio.sleep(0.01)
        written.append((bytes(transport.written), transport.closed))
    assert taken == [True, False]  # the first by `RESPOND`, the second by uvicorn's `send`
    assert written[0] == written[1]


async def settle_any(transport: FakeTransport) -> None:
    await until(lambda: bytes(transport.written))


async def test_respond_answers_only_the_current_request_of_a_pipeline() -> None:
    """A pipelined request's scope is not the connection's current cycle's: ASGI answers it."""
    taken: list[bool] = []
    proto, transport = respond_protocol(responding(200, [(b"content-length", b"1")], b"k", taken))
    proto.data_received(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    await settle(transport, 2)
    assert taken == [False, True]  # /a ran while /b's cycle was already the current one
    assert bytes(transport.written).count(b"\r\n\r\nk") == 2


# --- TAKE_BODY: a body that has all arrived, without `receive` -----------------------------------


def taking(seen: list[Any]) -> Any:
    """Takes the body if it can (else reads it by `receive`), then waits on `receive` again."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        taken = scope[TAKE_BODY](scope)
        seen.append(taken if taken is not None else ("received", await read_body(receive)))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        seen.append(await receive())  # after the answer: what uvicorn says once the body was read

    return app


async def test_a_body_that_has_all_arrived_is_taken_once_and_receive_then_says_disconnect() -> None:
    seen: list[Any] = []
    proto, transport = protocol(taking(seen))
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    await settle(transport, 1)
    await until(lambda: len(seen) == 2)
    assert seen == [b"hello", {"type": "http.disconnect"}]
    assert proto.cycle.body == b""  # taken: nothing is left for `receive` to give again


async def test_a_body_still_arriving_is_not_taken_but_received() -> None:
    seen: list[Any] = []
    proto, transport = protocol(taking(seen))
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
    await asyncio.sleep(0.01)
    proto.data_received(b"llo")
    await settle(transport, 1)
    await until(lambda: len(seen) == 2)
    assert seen[0] == ("received", b"hello")


async def test_a_body_behind_expect_100_continue_is_not_taken() -> None:
    """`receive` sends the `100 Continue` the client waits for: taking the body would skip it."""
    seen: list[Any] = []
    proto, transport = protocol(taking(seen))
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    await until(lambda: bytes(transport.written).startswith(b"HTTP/1.1 100 Continue"))
    proto.data_received(b"ok")
    await settle(transport, 1)
    await until(lambda: len(seen) == 2)
    assert seen[0] == ("received", b"ok")


async def test_take_body_answers_only_for_the_current_request() -> None:
    proto, _ = protocol()
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    assert proto.take_body({"type": "http"}) is None  # another request's scope
