"""What spans read from an MCP request body, and the server span's body replay (pure, no sockets)."""

from __future__ import annotations

import json

from starlette.types import Message

from gateway.http.traced import buffered
from gateway.tracing import attributes as a

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_tool_call_names_the_span_and_reads_meta_trace_context() -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "slow_count", "_meta": {"traceparent": TP, "tracestate": "a=b", "baggage": "x=y", "n": 1}},
    }
    described = a.describe(json.dumps(body).encode())
    assert described.span_name == "tools/call slow_count"
    assert described.attrs == {a.METHOD: "tools/call", a.TOOL: "slow_count", a.REQUEST_ID: "7"}
    assert described.carrier == {"traceparent": TP, "tracestate": "a=b"}  # SEP-414 keys; baggage is not read


def test_other_methods_batches_and_junk() -> None:
    prompt = a.describe(b'{"jsonrpc":"2.0","id":"x","method":"prompts/get","params":{"name":"greet"}}')
    assert prompt.span_name == "prompts/get greet" and prompt.attrs[a.PROMPT] == "greet"
    read = a.describe(b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}')
    assert read.span_name == "resources/read" and read.attrs[a.RESOURCE] == "file:///a"
    batch = a.describe(b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"x"}]')
    assert batch.span_name == "ping" and batch.carrier == {}
    for junk in (b"", b"not json", b"[]", b"3", b'{"method": 3, "params": []}', b'{"id": true}'):
        described = a.describe(junk)
        assert described.span_name == "mcp" and described.carrier == {} and a.REQUEST_ID not in described.attrs


def test_error_codes_and_session_prefix() -> None:
    assert a.error_code(b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"m"}}') == -32602
    assert a.error_code(b'{"result":{}}') is None and a.error_code(b"<html>") is None
    assert a.session_prefix("abcdefghijklmnop") == "abcdefgh"


async def test_buffered_body_is_replayed_unchanged() -> None:
    sent: list[Message] = [
        {"type": "http.request", "body": b'{"a":', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
        {"type": "http.disconnect"},
    ]
    queue = list(sent)

    async def receive() -> Message:
        return queue.pop(0)

    body, replay = await buffered(receive, limit=1000)
    assert body == b'{"a":1}'
    assert [await replay(), await replay(), await replay()] == sent


async def test_buffered_stops_past_the_limit() -> None:
    chunks: list[Message] = [{"type": "http.request", "body": b"x" * 10, "more_body": True} for _ in range(5)]
    queue = list(chunks)

    async def receive() -> Message:
        return queue.pop(0)

    body, replay = await buffered(receive, limit=15)
    assert body == b"x" * 20  # read no further than needed to know it is too large
    assert len(queue) == 3
    replayed = [await replay() for _ in range(5)]
    assert replayed == chunks
