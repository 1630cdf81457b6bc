"""OpenTelemetry tracing with real processes: two gateway replicas exporting OTLP/HTTP to a receiver
inside the test, Redis, an SDK upstream that records the `traceparent` it receives.

A traced client's call continues its trace through the gateway to the upstream (from the
`traceparent` header, or SEP-414 `_meta` on the stateless path); a call whose pumping replica is
SIGKILLed and which the client resumes on the other replica stays in the trace it began in (the
stream keeps the opening request's trace context in Redis); a gateway-served task's run nests
under its `tools/call`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from interop import harness
from tests.gateway_env import call, init_body, parse_sse
from tests.integration.careful_client import iter_sse
from tests.integration.conftest import GatewayProc, StartGateways, StartSdkUpstream
from tests.integration.otlp import ReceivedSpan, Receiver, otlp_receiver
from tests.integration.procs import ProcessGroup
from tests.integration.test_failover import GW_ARGS
from tests.integration.test_stateless import modern_call, modern_headers
from tests.integration.test_tasks import TASK_TOOLS, result, rpc_body, until

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
VERSION = "2025-11-25"
SERVER, CLIENT = 2, 3  # the protocol's SpanKind


def traceparent() -> tuple[str, str, str]:
    """A fresh client context: (header, trace id, span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def tracing_env(receiver: Receiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans reach the receiver quickly
        "OTEL_SERVICE_NAME": "gateway-under-test",
    }


def on(gateway: GatewayProc, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """The spans one replica exported (its service.instance.id is host:pid:random)."""
    return [s for s in spans if s.instance.split(":")[1] == str(gateway.proc.pid)]


def one(spans: list[ReceivedSpan], name: str, trace_id: str, **attrs: Any) -> ReceivedSpan:
    found = [
        s
        for s in spans
        if s.name == name and s.trace_id == trace_id and all(s.attributes.get(k) == v for k, v in attrs.items())
    ]
    assert found, f"no {name!r} span in trace {trace_id[:8]}: {sorted({(s.name, s.trace_id[:8]) for s in spans})}"
    return found[0]


def has(name: str, trace_id: str) -> Any:
    return lambda spans: any(s.name == name and s.trace_id == trace_id for s in spans)


async def upstream_traceparents(upstream: str, http: httpx.AsyncClient) -> list[str]:
    r = await http.get(upstream.removesuffix("/mcp") + "/traceparents")
    seen: list[str] = r.json()
    return seen


async def initialize(http: httpx.AsyncClient, url: str, tp: str) -> str:
    r = await http.post(url, headers={**HEADERS, "traceparent": tp}, json=init_body(VERSION))
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, headers=session_headers(sid), json=note)).status_code == 202
    return sid


def session_headers(sid: str, **extra: str) -> dict[str, str]:
    return {**HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": VERSION, **extra}


def answer(events: Sequence[Mapping[str, str]], rid: int) -> dict[str, Any]:
    for event in events:
        if event.get("data"):
            message = json.loads(event["data"])
            if message.get("id") == rid:
                return dict(message)
    raise AssertionError(f"no answer to {rid} in {events}")


async def test_a_call_continues_the_client_trace_to_the_upstream(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    async with otlp_receiver() as receiver, httpx.AsyncClient(timeout=20) as http:
        (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS, env=tracing_env(receiver))
        tp0, init_trace, _ = traceparent()
        sid = await initialize(http, gw.url, tp0)
        tp1, trace_id, client_span = traceparent()
        r = await http.post(
            gw.url, headers=session_headers(sid, traceparent=tp1), json=call("echo", rid=2, text="traced")
        )
        assert r.status_code == 200
        assert answer(parse_sse(r.text), 2)["result"]["content"][0]["text"] == "traced"

        spans = await receiver.wait_for(has("mcp.stream.pump", trace_id), "the echo call's pump")
        init = one(spans, "initialize", init_trace)
        assert init.kind == SERVER and init.attributes["mcp.session.id"] == sid[:8]
        server = one(spans, "tools/call echo", trace_id)
        assert server.kind == SERVER and server.parent_span_id == client_span
        assert server.attributes["mcp.method.name"] == "tools/call"
        assert server.attributes["gen_ai.tool.name"] == "echo"
        assert server.attributes["jsonrpc.request.id"] == "2"
        assert server.attributes["mcp.session.id"] == sid[:8]  # a prefix only: the id is a credential
        assert server.attributes["mcpgw.era"] == "sessionful"
        assert server.attributes["http.response.status_code"] == 200
        assert not [s for s in spans if sid in json.dumps(s.attributes)]
        forward = one(spans, "upstream POST", trace_id)
        assert forward.kind == CLIENT and forward.parent_span_id == server.span_id
        create = one(spans, "redis create", trace_id)
        assert create.parent_span_id == server.span_id
        pump = one(spans, "mcp.stream.pump", trace_id, **{"mcpgw.outcome": "finished"})
        assert pump.parent_span_id == server.span_id
        # The pump's writes after the stream's creation are its children. An answer that arrived
        # with (or right behind) the upstream's headers is written by the creation alone
        # (`EventLog.open`): then there is no append, and how often depends on timing.
        appends = [s for s in spans if s.name == "redis append" and s.trace_id == trace_id]
        assert all(s.parent_span_id == pump.span_id for s in appends), appends
        # The upstream got the gateway's client span as its parent: same trace, the gateway's span id.
        assert f"00-{trace_id}-{forward.span_id}-01" in await upstream_traceparents(upstream, http)


async def test_stateless_meta_trace_context_is_continued(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=False)
    async with otlp_receiver() as receiver, httpx.AsyncClient(timeout=20) as http:
        (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS, env=tracing_env(receiver))
        tp, trace_id, client_span = traceparent()
        body = modern_call("echo", {"text": "meta"}, rid=4)
        body["params"]["_meta"]["traceparent"] = tp  # SEP-414: the trace context rides in _meta
        r = await http.post(gw.url, headers=modern_headers("echo"), json=body)
        assert r.status_code == 200, r.text
        spans = await receiver.wait_for(has("upstream POST", trace_id), "the stateless call")
        server = one(spans, "tools/call echo", trace_id)
        assert server.parent_span_id == client_span and server.attributes["mcpgw.era"] == "stateless"
        forward = one(spans, "upstream POST", trace_id)
        assert forward.parent_span_id == server.span_id
        assert f"00-{trace_id}-{forward.span_id}-01" in await upstream_traceparents(upstream, http)


async def test_a_call_resumed_on_another_replica_stays_in_one_trace(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    steps = 12
    async with otlp_receiver() as receiver, httpx.AsyncClient(timeout=30) as http:
        gw_a, gw_b = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS, env=tracing_env(receiver))
        sid = await initialize(http, gw_a.url, traceparent()[0])
        tp, trace_id, _ = traceparent()
        last_id = ""
        seen = 0
        body = call("slow_count", rid=3, steps=steps, delay=0.25)
        body["params"]["_meta"] = {"progressToken": "p3"}  # one progress event per step
        async with http.stream("POST", gw_a.url, headers=session_headers(sid, traceparent=tp), json=body) as r:
            assert r.status_code == 200
            async for event in iter_sse(r):
                if event.data and event.id:
                    last_id, seen = event.id, seen + 1
                    if seen == 3:
                        break
        # A's server span is still open (its response streams), its child `redis create` is exported:
        before_kill = await receiver.wait_for(has("redis create", trace_id), "A's stream creation")
        created = one(before_kill, "redis create", trace_id)
        post_span = created.parent_span_id
        os.kill(gw_a.proc.pid, signal.SIGKILL)  # A pumps the stream (the POST went to it)

        # The client resumes on B, in a request of its own trace (say, a retry loop's).
        resume_tp, resume_trace, resume_client_span = traceparent()
        headers = session_headers(sid, **{"Last-Event-ID": last_id, "traceparent": resume_tp})
        headers.pop("Content-Type")
        headers["Accept"] = "text/event-stream"
        events: list[dict[str, str]] = []

        async def resume() -> None:
            async with http.stream("GET", gw_b.url, headers=headers) as r:
                assert r.status_code == 200
                async for event in iter_sse(r):
                    events.append({"data": event.data or "", "id": event.id or ""})

        await asyncio.wait_for(resume(), 60)
        assert answer(events, 3)["result"]["content"][0]["text"] == f"counted {steps}"

        spans = on(gw_b, await receiver.wait_for(has("mcp.stream.resume", trace_id), "the resumed delivery"))
        spans = on(gw_b, await receiver.wait_for(has("GET /mcp", resume_trace), "the resuming request"))
        takeover = one(spans, "mcp.stream.takeover", trace_id)
        assert takeover.parent_span_id == post_span  # A's server span, whose context the stream stored
        assert takeover.attributes["mcpgw.lease.previous_holder"].split(":")[1] == str(gw_a.proc.pid)
        pump = one(spans, "mcp.stream.pump", trace_id, **{"mcpgw.outcome": "finished"})
        assert pump.parent_span_id == takeover.span_id
        reopen = one(spans, "upstream GET", trace_id)
        assert reopen.parent_span_id == pump.span_id
        assert [s for s in spans if s.name == "redis append" and s.parent_span_id == pump.span_id]
        resumed = one(spans, "mcp.stream.resume", trace_id)
        request = one(spans, "GET /mcp", resume_trace)
        assert request.kind == SERVER and request.parent_span_id == resume_client_span
        assert request.attributes["mcpgw.stream.cursor"] == last_id
        assert (resume_trace, request.span_id) in resumed.links  # the resuming request is linked
        assert resumed.attributes["mcpgw.stream.events"] >= steps - 3
        # B's re-opened upstream stream carries the original trace to the upstream.
        assert f"00-{trace_id}-{reopen.span_id}-01" in await upstream_traceparents(upstream, http)


async def test_a_gateway_served_task_runs_in_the_trace_of_its_tools_call(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    fixture = harness.start_fixture(procs)
    async with otlp_receiver() as receiver, httpx.AsyncClient(timeout=20) as http:
        (gw,) = gateway_cluster(1, {"default": fixture}, key_prefix, TASK_TOOLS, env=tracing_env(receiver))
        tp, trace_id, client_span = traceparent()
        body = rpc_body("tools/call", {"name": "slow_compute", "arguments": {"seconds": 0.2, "label": "traced"}})
        body["params"]["_meta"]["traceparent"] = tp
        r = await http.post(gw.url, headers=modern_headers("slow_compute"), json=body)
        created = result(r.json())
        assert created["resultType"] == "task", created
        assert (await until(gw.url, created["taskId"], ("completed", "failed")))["status"] == "completed"
        spans = await receiver.wait_for(has("mcp.task.run", trace_id), "the task's run")
        server = one(spans, "tools/call slow_compute", trace_id)
        assert server.parent_span_id == client_span
        run = one(spans, "mcp.task.run", trace_id)
        assert run.parent_span_id == server.span_id
        assert run.attributes["mcpgw.task.id"] == created["taskId"][:8]
        assert run.attributes["gen_ai.tool.name"] == "slow_compute"
        upstream = one(spans, "upstream POST", trace_id)
        assert upstream.parent_span_id == run.span_id
