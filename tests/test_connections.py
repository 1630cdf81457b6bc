"""gateway.http.connections: the served protocol's head bound, deadlines, Host rule and caps,
fed bytes through a fake transport (no sockets; tests/integration/test_hardening.py has them)."""

from __future__ import annotations

import asyncio
import json
import pickle
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from gateway.config import Settings
from gateway.http import framing
from gateway.http.connections import GuardedHttpToolsProtocol, protocol_factory
from gateway.http.framing import Admission, ConnectionRules
from tests.test_server import FakeTransport, echo, until

RULES = ConnectionRules(
    max_header_bytes=4096,
    header_timeout=0.05,
    body_idle_timeout=0.05,
    max_connections=0,
    max_connections_per_client=0,
)


class Transport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.eof = False

    def write_eof(self) -> None:
        self.eof = True


def guarded(
    rules: ConnectionRules = RULES, admission: Admission | None = None, app: Any = echo
) -> tuple[GuardedHttpToolsProtocol, Transport]:
    config = uvicorn.Config(app, http=GuardedHttpToolsProtocol, lifespan="off", log_level="warning")
    config.load()
    proto = GuardedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, rules=rules, admission=admission or Admission(rules)
    )
    transport = Transport()
    proto.connection_made(transport)
    return proto, transport


def answer(transport: Transport) -> tuple[int, dict[str, Any]]:
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_a_head_past_the_limit_is_refused_431_without_feeding_the_parser_more() -> None:
    proto, transport = guarded()
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nX-Big: ")
    for _ in range(10):  # 10 x 1 KB: the limit (4 KB) is passed on the 4th read
        proto.data_received(b"a" * 1024)
    status, body = answer(transport)
    assert status == 431 and body["error"]["code"] == -32600 and body["id"] is None
    assert b"connection: close" in transport.written and transport.eof  # half-closed after the answer
    assert proto._head_bytes <= RULES.max_header_bytes  # never fed past the limit
    written = bytes(transport.written)
    proto.data_received(b"\r\n\r\n")  # what follows is dropped, never answered again
    await asyncio.sleep(0)
    assert bytes(transport.written) == written


async def test_one_read_larger_than_the_limit_is_refused_at_once() -> None:
    proto, transport = guarded()
    proto.data_received(b"GET /mcp HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
    assert answer(transport)[0] == 431 and transport.eof


async def test_a_head_just_under_the_limit_in_many_reads_is_served() -> None:
    proto, transport = guarded()
    head = b"POST /p HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3900 + b"\r\nContent-Length: 2\r\n\r\n"
    assert len(head) < RULES.max_header_bytes
    for i in range(0, len(head), 100):
        proto.data_received(head[i : i + 100])
    proto.data_received(b"ok")
    await until(lambda: b"/p:ok" in transport.written)
    assert not transport.eof


async def test_keep_alive_requests_each_get_the_whole_limit() -> None:
    proto, transport = guarded()
    request = b"POST /p HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3000 + b"\r\nContent-Length: 1\r\n\r\n1"
    for n in range(1, 4):
        proto.data_received(request)
        await until(lambda n=n: bytes(transport.written).count(b"/p:1") == n)
    assert not transport.eof


async def test_a_head_that_does_not_arrive_in_time_is_answered_408_and_closed() -> None:
    proto, transport = guarded()
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHo")
    await until(lambda: transport.eof)
    assert answer(transport)[0] == 408
    assert proto._timer is not None  # the lingering's end closes it (LINGER_SECONDS)


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer() -> None:
    _, transport = guarded()
    await until(lambda: transport.closed)
    assert transport.written == b""


async def test_a_stalled_body_is_answered_408_and_the_app_sees_a_disconnect() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await receive())
        seen.append(await receive())

    proto, transport = guarded(app=app)
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    await until(lambda: transport.eof)
    assert answer(transport)[0] == 408
    await until(lambda: len(seen) == 2)
    assert seen[1] == {"type": "http.disconnect"}


async def test_a_body_the_gateway_is_not_reading_is_not_timed_out() -> None:
    """Flow control paused reading (the app has not read what came): not the client's stall."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.Event().wait()  # never reads

    proto, transport = guarded(app=app)
    proto.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    proto.flow.pause_reading()
    await asyncio.sleep(0.2)  # four body-idle periods
    assert not transport.eof and transport.written == b""


async def test_a_complete_request_leaves_no_deadline_running() -> None:
    proto, transport = guarded()
    proto.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1")
    await until(lambda: b"/p:1" in transport.written)
    await asyncio.sleep(0.15)  # past both deadlines: the connection is idle, only keep-alive applies
    assert not transport.eof and proto._waiting_since is None


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",
    ],
)
async def test_two_hosts_or_none_is_400_and_closed(head: bytes) -> None:
    proto, transport = guarded()
    proto.data_received(head)
    await until(lambda: transport.closed)
    status, body = answer(transport)
    assert status == 400 and "Host" in body["error"]["message"]


async def test_http_1_0_without_host_is_served() -> None:
    proto, transport = guarded()
    proto.data_received(b"POST /p HTTP/1.0\r\nContent-Length: 1\r\n\r\n1")
    await until(lambda: b"/p:1" in transport.written)


async def test_a_connection_over_the_client_cap_may_ask_for_health_only() -> None:
    rules = ConnectionRules(4096, 1.0, 1.0, max_connections=0, max_connections_per_client=1)
    admission = Admission(rules)
    first, _ = guarded(rules, admission)
    assert admission.by_client == {"127.0.0.1": 1}
    health, health_transport = guarded(rules, admission)
    health.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: health_transport.closed)  # served (by the app), then closed
    assert bytes(health_transport.written).startswith(b"HTTP/1.1 200") and b"/healthz:" in health_transport.written
    other, other_transport = guarded(rules, admission)
    other.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    await until(lambda: other_transport.closed)
    status, body = answer(other_transport)
    assert status == 429 and "connections" in body["error"]["message"]
    for proto in (first, health, other):
        proto.connection_lost(None)
    assert admission.total == 0 and admission.by_client == {}


async def test_past_the_reserve_a_connection_is_answered_and_closed_at_accept() -> None:
    rules = ConnectionRules(4096, 1.0, 1.0, max_connections=1, max_connections_per_client=0)
    admission = Admission(rules)
    held = [guarded(rules, admission) for _ in range(1 + framing.HEALTH_RESERVE)]
    assert not any(transport.closed for _, transport in held)
    _, transport = guarded(rules, admission)
    assert transport.closed and answer(transport)[0] == 503


async def test_pipelined_requests_in_one_read_are_each_counted_from_their_own_head() -> None:
    proto, transport = guarded()
    pad = b"X-Pad: " + b"a" * 3000 + b"\r\n"  # three heads of ~3 KB: 9 KB in one read, each under 4 KB
    proto.data_received(
        b"".join(b"POST /%d HTTP/1.1\r\nHost: x\r\n%sContent-Length: 1\r\n\r\n%d" % (n, pad, n) for n in range(3))
    )
    await until(lambda: b"/2:2" in transport.written)
    out = bytes(transport.written)
    assert out.index(b"/0:0") < out.index(b"/1:1") < out.index(b"/2:2") and not transport.eof


async def test_a_head_begun_behind_a_body_in_the_same_read_is_bounded_by_the_next_read() -> None:
    """The head's start inside the read is unknown: its parsed lines are counted, then every byte."""
    proto, transport = guarded()
    proto.data_received(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n1GET /b HTTP/1.1\r\nHost: x\r\nX-Big: "
    )
    assert proto._in_head and 0 < proto._head_bytes < 100  # /b's target and Host line: the lower bound
    proto.data_received(b"a" * 5000)  # past the limit
    await until(lambda: transport.eof)
    assert b" 431 " in transport.written


def test_the_factory_reaches_a_workers_child_with_its_own_counts() -> None:
    """`--workers`: uvicorn pickles the config (and this factory) into each spawned child."""
    factory = protocol_factory(Settings(upstream=["default=http://127.0.0.1:9/mcp"], max_connections_per_client=7))
    factory.keywords["admission"].open("10.0.0.1")
    child = pickle.loads(pickle.dumps(factory))
    assert child.func is GuardedHttpToolsProtocol
    assert child.keywords["rules"].max_connections_per_client == 7
    assert child.keywords["admission"].total == 1  # a copy: the child's own counts from here on
    with_proxy = protocol_factory(Settings(upstream=["default=http://127.0.0.1:9/mcp"], trust_forwarded_for=True))
    assert not with_proxy.keywords["admission"].per_client  # the peer is the proxy
