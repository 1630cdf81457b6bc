"""2026-07-28 clients in front of 2025-only upstreams (era bridging, part A), through real processes.

Upstreams: `@modelcontextprotocol/server-everything` (2025 only) and the Python SDK server behind a
wrapper refusing 2026 requests (`tests/servers/sdk_2025_server.py`). Clients: the Python SDK
`Client(url, mode="2026-07-28")` and plain HTTP where a test must choose the replica.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any

import httpx
from mcp import Client
from mcp.types import CreateMessageResult, ElicitResult, ListRootsResult, TextContent

from tests.integration.conftest import GatewayProc, StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.otlp import otlp_receiver
from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port
from tests.integration.redis_topologies import LocalCluster
from tests.integration.test_tracing import has, one, traceparent, tracing_env
from tests.test_security import ISSUER, PUBLIC_PEM, token

SDK_2025 = REPO_ROOT / "tests" / "servers" / "sdk_2025_server.py"
MODERN = "2026-07-28"
EVERYTHING_ANSWERS = {
    "name": "Ada",
    "check": True,
    "email": "ada@example.com",
    "homepage": "https://example.com",
    "birthdate": "2000-01-01",
    "integer": 3,
    "number": 1.5,
}


def start_sdk_2025(procs: ProcessGroup, name: str = "old") -> str:
    port = free_port()
    argv = [sys.executable, str(SDK_2025), "--port", str(port), "--event-store", "--name", name]
    proc = procs.start(f"sdk2025-{port}", argv)
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    return f"http://127.0.0.1:{port}/mcp"


def meta(capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities or {},
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
    }


async def post(
    client: httpx.AsyncClient, url: str, rid: int, method: str, params: dict[str, Any], auth: str = ""
) -> dict[str, Any]:
    """One 2026-07-28 request; the answer (JSON, or the last message of an SSE answer)."""
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    name = params.get("name")
    if name is not None:
        headers["Mcp-Name"] = str(name)
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    response = await client.post(url, json=body, headers=headers)
    assert response.status_code == 200, (response.status_code, response.text)
    if response.headers["content-type"].startswith("text/event-stream"):
        datas = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return dict(json.loads([d for d in datas if d][-1]))
    return dict(response.json())


async def bridged_count(gateway: GatewayProc) -> int:
    async with httpx.AsyncClient() as client:
        text = (await client.get(gateway.metrics_url)).text
    found = re.search(r'mcpgw_bridged_requests_total\{direction="2026-to-2025"\} ([0-9.]+)', text)
    return int(float(found.group(1))) if found else 0


async def upstream_json(url: str, path: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return dict((await client.get(url.removesuffix("/mcp") + path)).json())


async def test_everything_through_three_replicas(
    everything_upstream: str, gateway_cluster: StartGateways, load_balancer: StartLoadBalancer, key_prefix: str
) -> None:
    gateways = gateway_cluster(3, {"default": everything_upstream}, key_prefix)
    lb = load_balancer(gateways)
    async with httpx.AsyncClient(timeout=20) as http:
        discover = await post(http, lb, 1, "server/discover", {"_meta": meta()})
    assert discover["result"]["supportedVersions"] == [MODERN]
    assert discover["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-servers/everything"
    assert "tools" in discover["result"]["capabilities"]

    reported: list[float] = []
    asked: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reported.append(progress)

    async def elicit(context: Any, params: Any) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content=EVERYTHING_ANSWERS)

    async def sample(context: Any, params: Any) -> CreateMessageResult:
        asked.append("sampling")
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="Paris"), model="m")

    async def roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[])

    callbacks: dict[str, Any] = {"elicitation_callback": elicit, "sampling_callback": sample}
    async with Client(lb, mode=MODERN, list_roots_callback=roots, **callbacks) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "trigger-long-running-operation", "trigger-elicitation-request"} <= tools
        # roots are not declared upstream (asked on the session's GET stream, they would hang the call)
        assert "get-roots-list" not in tools
        sampled = await client.call_tool("trigger-sampling-request", {"prompt": "capital of France?"})
        assert '"text": "Paris"' in sampled.content[0].text  # type: ignore[union-attr]
        echoed = await client.call_tool("echo", {"message": "hi"})
        assert echoed.content[0].text == "Echo: hi"  # type: ignore[union-attr]
        long = await client.call_tool(
            "trigger-long-running-operation", {"duration": 1, "steps": 4}, progress_callback=on_progress
        )
        assert not long.is_error and reported == [1.0, 2.0, 3.0, 4.0]
        elicited = await client.call_tool("trigger-elicitation-request", {})
    assert asked[0] == "sampling" and len(asked) == 2
    assert "Name: Ada" in elicited.content[1].text  # type: ignore[union-attr]
    counts = [await bridged_count(gw) for gw in gateways]
    assert sum(counts) >= 6 and sum(1 for c in counts if c) >= 2, counts  # every request bridged, by several replicas


async def test_elicitation_retry_lands_on_another_replica(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    first, second, _ = gateway_cluster(3, {"default": upstream}, key_prefix)
    params = {"name": "ask_name", "arguments": {}, "_meta": meta({"elicitation": {}})}
    async with httpx.AsyncClient(timeout=20) as http:
        asked = await post(http, first.url, 1, "tools/call", params)
        result = asked["result"]
        assert asked["id"] == 1 and result["resultType"] == "input_required"
        [(key, question)] = result["inputRequests"].items()
        assert question["method"] == "elicitation/create"
        assert question["params"]["message"] == "What is your name?"
        state = result["requestState"]

        tampered = {**params, "inputResponses": {key: {"action": "accept"}}, "requestState": state[:-4] + "AAA="}
        refused = await post(http, second.url, 2, "tools/call", tampered)
        assert refused["error"]["code"] == -32602, refused
        other_tool = {**params, "name": "echo", "inputResponses": {}, "requestState": state}
        refused = await post(http, second.url, 3, "tools/call", other_tool)
        assert "another request" in refused["error"]["message"]

        first.proc.kill()  # SIGKILL: the replica that asked keeps nothing the retry needs
        answers = {key: {"action": "accept", "content": {"name": "Ada"}}}
        retry = {**params, "inputResponses": answers, "requestState": state}
        done = await post(http, second.url, 4, "tools/call", retry)
        replayed = await post(http, second.url, 5, "tools/call", retry)
    assert done["id"] == 4 and done["result"]["resultType"] == "complete"
    assert done["result"]["content"][0]["text"] == "hello Ada"
    assert replayed["error"]["code"] == -32602 and "used already" in replayed["error"]["message"]
    assert await bridged_count(second) == 4


async def test_upstream_sessions_are_held_not_opened_per_request(
    procs: ProcessGroup, gateway_cluster: StartGateways, load_balancer: StartLoadBalancer, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    lb = load_balancer(gateway_cluster(3, {"default": upstream}, key_prefix))
    async with httpx.AsyncClient(timeout=20) as http:
        first = await post(http, lb, 1, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}, "_meta": meta()})
        assert first["result"]["content"][0]["text"] == "3"
        opened = (await upstream_json(upstream, "/sessions")).get("initialized", 0)
        for rid in range(2, 14):
            answer = await post(http, lb, rid, "tools/call", {"name": "whoami", "arguments": {}, "_meta": meta()})
            assert answer["id"] == rid and answer["result"]["resultType"] == "complete"
        listed = await post(http, lb, 20, "tools/list", {"_meta": meta()})
        assert listed["result"]["cacheScope"] == "private" and listed["result"]["ttlMs"] == 0
        assert (await upstream_json(upstream, "/sessions")).get("initialized", 0) == opened
        # other declared capabilities: a session of their own (the SDK elicits only when declared)
        await post(http, lb, 30, "tools/list", {"_meta": meta({"elicitation": {}})})
    assert (await upstream_json(upstream, "/sessions")).get("initialized", 0) == opened + 1


async def test_closing_the_response_cancels_the_call_upstream(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    [gateway] = gateway_cluster(1, {"default": upstream}, key_prefix)
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "slow_count",
    }
    params = {"name": "slow_count", "arguments": {"steps": 100, "delay": 0.1}, "_meta": {**meta(), "progressToken": 1}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    async with httpx.AsyncClient(timeout=20) as http, http.stream("POST", gateway.url, json=body, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data:") and "notifications/progress" in line:
                break  # one progress seen: the call runs upstream; now the client goes
    stats: dict[str, Any] = {}
    for _ in range(100):
        stats = await upstream_json(upstream, "/stats")
        if stats.get("cancelled"):
            break
        await asyncio.sleep(0.1)
    assert stats == {"started": 1, "finished": 0, "cancelled": 1}


async def test_a_pinned_era_is_not_probed_nor_bridged(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    [gateway] = gateway_cluster(1, {"default": upstream}, key_prefix, ("--upstream-era", "default=2026"))
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}}
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(gateway.url, json=body, headers={**headers, "Mcp-Method": "tools/list"})
    assert response.status_code == 400 and "Server not initialized" in response.text  # the upstream's own refusal
    assert await bridged_count(gateway) == 0


async def test_idle_upstream_sessions_are_reaped(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    [gateway] = gateway_cluster(1, {"default": upstream}, key_prefix, ("--bridge-session-idle", "1"))
    async with httpx.AsyncClient(timeout=20) as http:
        await post(http, gateway.url, 1, "tools/call", {"name": "echo", "arguments": {"text": "x"}, "_meta": meta()})
    sessions: dict[str, Any] = {}
    for _ in range(100):
        sessions = await upstream_json(upstream, "/sessions")
        if sessions.get("deleted"):
            break
        await asyncio.sleep(0.1)
    assert sessions.get("deleted") == 1, sessions  # the reaper DELETEd the held session upstream


async def test_listen_serves_the_held_sessions_notifications(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    first, second = gateway_cluster(2, {"default": upstream}, key_prefix)
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": MODERN}
    notifications = {"toolsListChanged": True, "resourceSubscriptions": ["res://1", "res://3"]}
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "subscriptions/listen",
        "params": {"_meta": meta(), "notifications": notifications},
    }
    seen: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=20) as http:
        listen = {**headers, "Mcp-Method": "subscriptions/listen"}
        async with http.stream("POST", first.url, json=body, headers=listen) as stream:
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    break  # the acknowledgment: the GET stream is open upstream
            # the same principal's call, on another replica, makes the upstream session notify
            broadcast = {"name": "broadcast", "arguments": {"count": 5, "delay": 0.05}, "_meta": meta()}
            assert (await post(http, second.url, 8, "tools/call", broadcast))["result"]["resultType"] == "complete"
            async for line in lines:
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if len(seen) == 3:
                        break
    ack, *updates = seen
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    # the SDK server announces no tools.listChanged: only the resource updates are honoured
    assert ack["params"] == {
        "notifications": {"resourceSubscriptions": ["res://1", "res://3"]},
        "_meta": {"io.modelcontextprotocol/subscriptionId": 7},
    }
    assert [(u["method"], u["params"]["uri"]) for u in updates] == [
        ("notifications/resources/updated", "res://1"),
        ("notifications/resources/updated", "res://3"),
    ]
    assert all(u["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": 7} for u in updates)


async def test_no_state_crosses_principals(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    auth = ("--auth-issuer", ISSUER, "--auth-public-key", PUBLIC_PEM, "--resource-url", "https://gw.example/mcp")
    first, second = gateway_cluster(2, {"default": upstream}, key_prefix, auth)
    alice, bob = token("alice"), token("bob")
    params = {"name": "ask_name", "arguments": {}, "_meta": meta({"elicitation": {}})}
    async with httpx.AsyncClient(timeout=20) as http:
        before = (await upstream_json(upstream, "/sessions")).get("initialized", 0)
        asked = await post(http, first.url, 1, "tools/call", params, alice)
        state = asked["result"]["requestState"]
        [key] = asked["result"]["inputRequests"]
        answers = {key: {"action": "accept", "content": {"name": "Mallory"}}}
        stolen = await post(
            http, second.url, 2, "tools/call", {**params, "inputResponses": answers, "requestState": state}, bob
        )
        assert stolen["error"]["code"] == -32602 and "another request" in stolen["error"]["message"]
        answers = {key: {"action": "accept", "content": {"name": "Alice"}}}
        done = await post(
            http, second.url, 3, "tools/call", {**params, "inputResponses": answers, "requestState": state}, alice
        )
        assert done["result"]["content"][0]["text"] == "hello Alice"
        await post(http, first.url, 4, "tools/list", {"_meta": meta({"elicitation": {}})}, alice)
        await post(http, second.url, 5, "tools/list", {"_meta": meta({"elicitation": {}})}, bob)
    # one session for alice's key, one for bob's (bob's state was refused before any upstream work)
    assert (await upstream_json(upstream, "/sessions")).get("initialized", 0) == before + 2


async def test_on_a_redis_cluster(
    procs: ProcessGroup, redis_cluster: LocalCluster, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    first, second = gateway_cluster(2, {"default": upstream}, key_prefix, redis_cluster.gateway_args())
    params = {"name": "ask_name", "arguments": {}, "_meta": meta({"elicitation": {}})}
    async with httpx.AsyncClient(timeout=20) as http:
        discover = await post(http, second.url, 1, "server/discover", {"_meta": meta()})
        assert discover["result"]["supportedVersions"] == [MODERN]
        asked = await post(http, first.url, 2, "tools/call", params)
        [key] = asked["result"]["inputRequests"]
        answers = {key: {"action": "accept", "content": {"name": "Ada"}}}
        retry = {**params, "inputResponses": answers, "requestState": asked["result"]["requestState"]}
        done = await post(http, second.url, 3, "tools/call", retry)
    assert done["result"]["content"][0]["text"] == "hello Ada"
    assert await bridged_count(first) == 1 and await bridged_count(second) == 2


async def test_a_pool_mixing_eras_serves_each_instance_in_its_own(
    procs: ProcessGroup, sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    modern, old = sdk_upstream(name="modern"), start_sdk_2025(procs, name="old")
    [gateway] = gateway_cluster(1, {"default": [modern, old]}, key_prefix)
    async with httpx.AsyncClient(timeout=20) as http:
        answers = [
            await post(http, gateway.url, rid, "tools/call", {"name": "whoami", "arguments": {}, "_meta": meta()})
            for rid in range(4)
        ]
    assert sorted(a["result"]["content"][0]["text"] for a in answers) == ["modern", "modern", "old", "old"]
    assert await bridged_count(gateway) == 2  # only the 2025 instance's requests were bridged


async def test_the_bridge_is_its_own_span_in_the_clients_trace(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_sdk_2025(procs)
    async with otlp_receiver() as receiver, httpx.AsyncClient(timeout=20) as http:
        [gateway] = gateway_cluster(1, {"default": upstream}, key_prefix, env=tracing_env(receiver))
        tp, trace_id, _ = traceparent()
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": "tools/list",
            "traceparent": tp,
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta()}}
        assert (await http.post(gateway.url, json=body, headers=headers)).status_code == 200
        spans = await receiver.wait_for(has("bridge 2026->2025", trace_id), "the bridge's span")
    bridge = one(spans, "bridge 2026->2025", trace_id, **{"mcp.method": "tools/list"})
    upstream_posts = [s for s in spans if s.trace_id == trace_id and s.name == "upstream POST"]
    assert upstream_posts and all(s.parent_span_id == bridge.span_id for s in upstream_posts)
