"""MCP 2026-07-28 (stateless) through three replicas: SDK client, header checks, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import redis.asyncio as aioredis
from mcp import Client

from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.test_failover import GW_ARGS

MODERN = "2026-07-28"


def modern_call(name: str, arguments: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": arguments,
            "_meta": {
                "progressToken": f"t{rid}",
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }


def modern_headers(name: str, **extra: str) -> dict[str, str]:
    return {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
        **extra,
    }


async def keys_under(redis_url: str, prefix: str) -> list[bytes]:
    """Keys under `prefix`, apart from the replicas' own liveness keys (`Keys.replica`), what a
    replica writes once at start-up (instance eras `Keys.upstream_era`, the bridge's `Keys.bridge_secret`),
    and the per-client limits (`Keys.limit`, `Keys.quota`: on by default, counted across the fleet, every era)."""
    client = aioredis.from_url(redis_url)
    try:
        # per process, not per request: they are not writes of the era
        started = (b":replica:", b":era:", b":bridge:secret", b":limits:", b":{quota:")
        return [k async for k in client.scan_iter(match=f"{prefix}:*") if not any(s in k for s in started)]
    finally:
        await client.aclose()


async def test_sdk_client_in_stateless_mode_through_three_replicas(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    upstream = sdk_upstream(event_store=True)
    lb = load_balancer(gateway_cluster(3, {"default": upstream}, key_prefix, GW_ARGS))
    async with Client(lb, mode=MODERN) as client:
        assert client.protocol_version == MODERN
        tools = await client.list_tools()
        assert "slow_count" in {t.name for t in tools.tools}
        seen: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append(progress)

        for _ in range(3):  # round robin: each call lands on another replica
            result = await client.call_tool("add", {"a": 20, "b": 22})
            assert result.content[0].text == "42"  # type: ignore[union-attr]
        result = await client.call_tool("slow_count", {"steps": 4, "delay": 0.05}, progress_callback=on_progress)
        assert seen == [1, 2, 3, 4]
    assert await keys_under(redis_url, key_prefix) == []  # stateless era: no Redis writes


async def test_header_mismatch_is_400_and_unknown_mcp_headers_pass(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=False)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS)
    async with httpx.AsyncClient(timeout=10) as http:
        ok = await http.post(
            gw.url,
            headers=modern_headers("echo", **{"Mcp-Future-Header": "x"}),
            json=modern_call("echo", {"text": "hi"}),
        )
        assert ok.status_code == 200 and "mcp-session-id" not in ok.headers
        for headers in (modern_headers("add"), {**modern_headers("echo"), "Mcp-Method": "tools/list"}):
            bad = await http.post(gw.url, headers=headers, json=modern_call("echo", {"text": "hi"}, rid=5))
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == -32020 and bad.json()["id"] == 5
        get = await http.get(gw.url, headers={"MCP-Protocol-Version": MODERN, "Accept": "text/event-stream"})
        assert get.status_code == 405


async def test_client_closing_the_stream_cancels_upstream(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> None:
    upstream = sdk_upstream(event_store=False)
    stats_url = upstream.removesuffix("/mcp") + "/stats"
    lb = load_balancer(gateway_cluster(3, {"default": upstream}, key_prefix, GW_ARGS))
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream(
            "POST",
            lb,
            headers=modern_headers("slow_count"),
            json=modern_call("slow_count", {"steps": 100, "delay": 0.1}),
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if "notifications/progress" in line:
                    break  # the tool runs; now the client walks away
        for _ in range(60):
            stats = (await http.get(stats_url)).json()
            if stats["cancelled"]:
                break
            await asyncio.sleep(0.1)
        assert stats == {"started": 1, "finished": 0, "cancelled": 1}, stats
