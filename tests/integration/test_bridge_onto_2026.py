"""Era bridging, part B, with real processes: 2025-era clients (the SDK's `ClientSession` at
2025-11-25 and `Client(mode="legacy")`, the TypeScript SDK client, raw HTTP) through gateway replicas
in front of an SDK server that speaks only 2026-07-28 (`tests/servers/sdk_2026_server.py`,
`--upstream-era default=2026`): the handshake, requests and answers, metrics and the bridge's span."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
import redis.asyncio as aioredis
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from interop import harness
from tests.integration.bridge_2026 import GW_ARGS, bridged_count, start_2026_upstream
from tests.integration.careful_client import CarefulClient, iter_sse
from tests.integration.clients import call_with_progress, sdk_client, text_of
from tests.integration.conftest import StartGateways, StartLoadBalancer
from tests.integration.otlp import otlp_receiver
from tests.integration.procs import ProcessGroup, free_port
from tests.integration.test_tracing import has, one, traceparent, tracing_env


async def elicit_name(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


async def sample(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="blue"), model="m")


async def roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/", name="work")])


async def test_sdk_clients_through_three_replicas_behind_a_load_balancer(
    procs: ProcessGroup,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    upstream = start_2026_upstream(procs)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, GW_ARGS)
    url = load_balancer(gateways)
    async with sdk_client(url) as (client, _):
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert {"echo", "regional", "slow_count", "ask"} <= set(names)
        assert text_of(await client.call_tool("echo", {"text": "hi"})) == "hi"
        assert text_of(await client.call_tool("regional", {"region": "eu-1", "query": "q"})) == "q in eu-1"
        result, progress = await call_with_progress(client, "slow_count", {"steps": 3, "delay": 0.1})
        assert text_of(result) == "counted 3"
        assert [p.progress for p in progress] == [1, 2, 3]  # on the POST's stream, logged and relayed
    async with httpx.AsyncClient() as plain:
        seen = (await plain.get(upstream.removesuffix("/mcp") + "/seen")).json()
    regional = [h for h in seen if h.get("mcp-name") == "regional"]
    # transports §Custom Headers from Tool Parameters: the x-mcp-header parameter rides its header.
    # A replica that has not relayed the tools/list yet sends none, is refused (HeaderMismatch),
    # lists the tools and retries with it.
    assert regional[-1]["mcp-param-region"] == "eu-1"
    assert {h.get("mcp-param-region") for h in regional} <= {None, "eu-1"} and len(regional) <= 2
    assert all(h["mcp-protocol-version"] == "2026-07-28" and h["mcp-method"] == "tools/call" for h in seen)

    async with (
        httpx2.AsyncClient() as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(
            read, write, elicitation_callback=elicit_name, sampling_callback=sample, list_roots_callback=roots
        ) as session,
    ):
        init = await session.initialize()
        assert init.protocol_version == "2025-11-25"
        assert init.server_info.name == "u1"  # from server/discover's _meta serverInfo
        answer = await session.call_tool("ask", {})
        assert text_of(answer) == "hello Ada from u1"  # the input-required round, as elicitation/create
        assert text_of(await session.call_tool("muse", {"topic": "sky"})) == "the model said blue"  # sampling
        assert text_of(await session.call_tool("rooted", {})) == "file:///work/"  # roots/list
    assert bridged_count(gateways) >= 7


async def test_session_record_keeps_the_client_version_and_capabilities(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str, redis_url: str
) -> None:
    upstream = start_2026_upstream(procs)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw.url, protocol_version="2025-06-18") as client:
        result = await client.initialize()
        assert result["protocolVersion"] == "2025-06-18"
        assert "resultType" not in result and "supportedVersions" not in result
        redis = aioredis.from_url(redis_url)
        try:
            record = await redis.hgetall(f"{key_prefix}:{{{client.session_id}}}:session")
        finally:
            await redis.aclose()
        assert record[b"protocol"] == b"2025-06-18"
        assert record[b"upstream_sid"] == b""
        assert json.loads(record[b"init_params"])["clientInfo"]["name"] == "careful-client"
        listed = await client.request("tools/list")
        assert "resultType" not in listed["result"] and "ttlMs" not in listed["result"]
        assert await client.delete_session() == 200
        assert await client.notify("notifications/initialized") == 404


async def test_2025_03_26_batch_is_split_and_notifications_are_accepted(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_2026_upstream(procs)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw.url, protocol_version="2025-03-26") as client:
        await client.initialize()  # its notifications/initialized must be 202
        assert await client.notify("notifications/roots/list_changed") == 202
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "a"}}},
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
            },
        ]
        async with client.http.stream("POST", gw.url, json=batch, headers=client.headers()) as response:
            assert response.status_code == 200
            answers = {m["id"]: m for m in [e.json() async for e in iter_sse(response)] if "id" in m}
    assert answers[1]["result"]["content"][0]["text"] == "a"
    assert answers[2]["result"]["structuredContent"] == {"result": 3}
    assert all("resultType" not in a["result"] for a in answers.values())
    assert bridged_count([gw]) == 3  # initialize and the batch's two requests


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
async def test_older_clients_negotiate_their_own_version(
    version: str, procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_2026_upstream(procs)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw.url, protocol_version=version) as client:
        assert (await client.initialize())["protocolVersion"] == version
        answer = await client.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
    assert answer["result"]["structuredContent"] == {"result": 5}


def test_ts_sdk_client_progress_and_resume_through_the_bridge(
    procs: ProcessGroup, gateway_cluster: StartGateways, load_balancer: StartLoadBalancer, key_prefix: str
) -> None:
    """The TypeScript SDK client (a 2025 era) calls slow_count on the 2026-07-28 upstream, its POST
    stream is cut after three progress events, and it resumes with Last-Event-ID (round robin: on
    another replica, from the event log): the result and every progress event arrive once."""
    upstream = start_2026_upstream(procs)
    url = load_balancer(gateway_cluster(3, {"default": upstream}, key_prefix, GW_ARGS))
    run = harness.run_ts_client(url, "sdk")
    assert run.ok, run.output
    assert run.detail["progress"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert str(run.detail["protocolVersion"]).startswith("2025-")


async def test_initialize_skips_an_unreachable_instance(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_2026_upstream(procs)
    (gw,) = gateway_cluster(1, {"default": [f"http://127.0.0.1:{free_port()}/mcp", upstream]}, key_prefix, GW_ARGS)
    for _ in range(3):  # round robin would pick the unreachable instance for one of them
        async with CarefulClient(gw.url) as client:
            assert (await client.initialize())["serverInfo"]["name"] == "u1"
            answer = await client.request("tools/call", {"name": "whoami", "arguments": {}})
            assert answer["result"]["content"][0]["text"] == "u1"


async def test_the_bridge_is_its_own_span_between_the_request_and_the_upstream_call(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_2026_upstream(procs)
    async with otlp_receiver() as receiver, CarefulClient(f"{upstream}-unused") as client:
        (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS, env=tracing_env(receiver))
        client.url = gw.url
        await client.initialize()
        tp, trace_id, client_span = traceparent()
        body = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "t"}},
        }
        response = await client.http.post(gw.url, json=body, headers={**client.headers(), "traceparent": tp})
        assert response.json()["result"]["content"][0]["text"] == "t"
        spans = await receiver.wait_for(has("upstream POST", trace_id), "the bridged call's upstream POST")
    server = one(spans, "tools/call echo", trace_id)
    assert server.parent_span_id == client_span
    bridge = one(spans, "mcp.bridge", trace_id, **{"mcp.bridge.direction": "2025-to-2026"})
    assert bridge.parent_span_id == server.span_id
    assert one(spans, "upstream POST", trace_id).parent_span_id == bridge.span_id
