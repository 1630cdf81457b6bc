"""The server span with tracing on, in-process: the app on uvicorn, a scripted upstream, and the
OTLP/HTTP receiver of the integration tests (the replica's exporter thread posts to it)."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import pytest

from tests.gateway_env import call, parse_sse, running_gateway
from tests.integration.otlp import Receiver, otlp_receiver


@pytest.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    async with otlp_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
            monkeypatch.delenv(name, raising=False)
        yield receiver


async def test_server_spans_describe_requests_and_errors(receiver: Receiver) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    async with running_gateway(max_body_bytes=4096) as env:
        sid = await env.initialize()
        headers = {**env.headers(sid), "traceparent": f"00-{trace_id}-{span_id}-01"}
        r = await env.client.post(env.mcp, headers=headers, json=call("echo", rid=9, text="hi"))
        assert r.status_code == 200
        # the body read for the span reached the upstream unchanged
        assert env.upstream.requests[-1] == call("echo", rid=9, text="hi")
        seen = [h["traceparent"] for h in env.upstream.headers_seen if "traceparent" in h]
        assert seen and seen[-1].split("-")[1] == trace_id and seen[-1].split("-")[2] != span_id

        gone = await env.client.post(env.mcp, headers=env.headers("x" * 40), json=call("echo", rid=10, text="x"))
        assert gone.status_code == 404
        big = json.dumps(call("echo", rid=11, text="y" * 8000)).encode()
        refused = await env.client.post(env.mcp, headers={**env.headers(sid)}, content=big)
        assert refused.status_code == 413

        spans = await receiver.wait_for(
            lambda got: {200, 404, 413} <= {s.attributes.get("http.response.status_code") for s in got},
            "the three calls",
        )
    echo = next(s for s in spans if s.name == "tools/call echo" and s.trace_id == trace_id)
    assert echo.parent_span_id == span_id and echo.attributes["jsonrpc.request.id"] == "9"
    assert echo.attributes["mcp.session.id"] == sid[:8]
    assert echo.service == "mcp-gateway"
    upstream = next(s for s in spans if s.name == "upstream POST" and s.trace_id == trace_id)
    assert seen[-1] == f"00-{trace_id}-{upstream.span_id}-01"
    missing = next(s for s in spans if s.attributes.get("jsonrpc.request.id") == "10")
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.attributes["mcp.session.id"] == "x" * 8
    assert missing.attributes["error.type"] == missing.attributes["rpc.response.status_code"]
    assert missing.status == 0  # a client error is not a server span failure
    # declared larger than --max-body-bytes: refused unread, so the span has no method to name it by
    too_big = next(s for s in spans if s.attributes.get("http.response.status_code") == 413)
    assert too_big.name == "POST /mcp" and "mcp.method.name" not in too_big.attributes


async def test_resume_and_gap_spans_join_the_stream_trace(receiver: Receiver) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    async with running_gateway() as env:
        sid = await env.initialize()
        headers = {**env.headers(sid), "traceparent": f"00-{trace_id}-{span_id}-01"}
        r = await env.client.post(env.mcp, headers=headers, json=call("stream", rid=3, count=3))
        ids = [e["id"] for e in parse_sse(r.text) if e.get("id") and e.get("data")]
        assert len(ids) == 4, r.text  # three progress notifications and the answer
        stream = ids[0].split(".")[0]
        get = {**env.headers(sid), "Accept": "text/event-stream", "Last-Event-ID": ids[0]}
        resumed = await env.client.get(env.mcp, headers=get)  # a reconnect without a trace context of its own
        assert [e["id"] for e in parse_sse(resumed.text) if e.get("data")] == ids[1:]
        gateway = env.app.state.gateway
        await gateway.redis.delete(gateway.keys.meta(sid, stream))  # the store lost the stream's state
        gap = await env.client.get(env.mcp, headers={**get, "Last-Event-ID": ids[1]})
        assert gap.status_code == 200 and ids[-1] in gap.text  # the retained answer, not a silent skip
        spans = await receiver.wait_for(lambda got: any(s.name == "mcp.stream.gap" for s in got), "the gap")
    post = next(s for s in spans if s.name == "tools/call stream")
    assert post.trace_id == trace_id
    resume = next(s for s in spans if s.name == "mcp.stream.resume")
    request = next(s for s in spans if s.name == "GET /mcp" and s.attributes.get("mcpgw.stream.cursor") == ids[0])
    assert resume.trace_id == trace_id and resume.parent_span_id == post.span_id  # the stream's stored context
    assert resume.links == ((request.trace_id, request.span_id),) and request.trace_id != trace_id
    assert resume.attributes["mcpgw.stream.events"] == 3
    gap_span = next(s for s in spans if s.name == "mcp.stream.gap")
    assert gap_span.attributes["mcpgw.gap.reason"].startswith("the stream's state was lost")
    assert gap_span.attributes["mcpgw.stream.id"] == stream and gap_span.attributes["mcpgw.gap.lost_requests"] == 0
