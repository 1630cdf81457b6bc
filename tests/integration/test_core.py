"""Core gateway with real processes: SDK server upstream, two gateway replicas sharing Redis,
the official SDK client and raw HTTP for the bad-input cases."""

from __future__ import annotations

import sys

import httpx
import pytest
import redis.asyncio as aioredis

from tests.integration.careful_client import CarefulClient, SessionGone
from tests.integration.clients import call_with_progress, sdk_client, text_of
from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.procs import ProcessGroup, free_port

GW_ARGS = ("--log-format", "text")


async def upstream_sid_of(redis_url: str, key_prefix: str, session_id: str) -> str:
    client = aioredis.from_url(redis_url)
    try:
        raw = await client.hget(f"{key_prefix}:{{{session_id}}}:session", "upstream_sid")
    finally:
        await client.aclose()
    assert isinstance(raw, bytes), "no session record in Redis"
    return str(raw.decode())


async def test_session_started_on_one_replica_works_on_the_other(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, redis_url: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        sid = client.session_id
        assert sid is not None
        client.url = gw2.url  # every later request goes to the other replica
        tools = await client.request("tools/list")
        names = {t["name"] for t in tools["result"]["tools"]}
        assert {"echo", "add", "slow_count", "whoami"} <= names
        answer = await client.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
        assert answer["result"]["content"][0]["text"] == "5"
        upstream_sid = await upstream_sid_of(redis_url, key_prefix, sid)
        assert upstream_sid and upstream_sid != sid  # the client never sees the upstream's id
        assert await client.delete_session() == 200  # answered by gw2 ...
        client.url = gw1.url  # ... and gw1, which served this session before, knows at once
        with pytest.raises(SessionGone):
            await client.request("tools/list")
        client.url = gw2.url
        with pytest.raises(SessionGone):
            await client.request("tools/list")


async def test_sdk_client_through_load_balancer(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    upstream = sdk_upstream(event_store=False)  # an SDK server without resumability works too
    gateways = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    lb = load_balancer(gateways)
    async with sdk_client(lb) as (client, get_sid):
        tools = await client.list_tools()
        assert "slow_count" in {t.name for t in tools.tools}
        result, progress = await call_with_progress(client, "slow_count", {"steps": 5, "delay": 0.05})
        assert text_of(result) == "counted 5"
        assert [p.progress for p in progress] == [1, 2, 3, 4, 5]
        echo = await client.call_tool("echo", {"text": "through two replicas"})
        assert text_of(echo) == "through two replicas"
        sid = get_sid()
        assert sid is not None and sid != await upstream_sid_of(redis_url, key_prefix, sid)


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
async def test_each_sessionful_era(
    version: str, sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url, protocol_version=version) as client:
        result = await client.initialize()
        assert result["protocolVersion"] == version
        client.url = gw2.url
        answer = await client.request("tools/call", {"name": "echo", "arguments": {"text": version}})
        assert answer["result"]["content"][0]["text"] == version


async def test_bad_input_over_real_http(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=False)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS)
    json_h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}
    async with httpx.AsyncClient(timeout=10) as http:
        cases = [
            (await http.post(gw.url, headers=json_h, json=call), 400),  # no session id
            (await http.post(gw.url, headers={**json_h, "Mcp-Session-Id": "x" * 32}, json=call), 404),
            (await http.post(gw.url, headers=json_h, content=b"{oops"), 400),
            (await http.post(gw.url, headers={**json_h, "Content-Type": "text/plain"}, json=call), 415),
            (await http.post(gw.url, headers={**json_h, "Accept": "text/html"}, json=call), 406),
            (await http.post(gw.url, headers={**json_h, "Origin": "https://evil.example"}, json=call), 403),
            (
                await http.post(gw.url, headers={**json_h, "MCP-Protocol-Version": "2024-01-01"}, json=call),
                400,
            ),
            (await http.post(gw.url, headers=json_h, content=b" " * (5 << 20)), 413),
            (await http.request("PUT", gw.url, headers=json_h), 405),
        ]
        for response, status in cases:
            assert response.status_code == status, (status, response.text)
            if status != 405:
                body = response.json()
                assert body["jsonrpc"] == "2.0" and "code" in body["error"]
            assert "Traceback" not in response.text
        # a request with an id gets that id back in the error
        assert cases[0][0].json()["id"] == 7


async def test_upstream_down_is_503_with_jsonrpc_body(gateway_cluster: StartGateways, key_prefix: str) -> None:
    (gw,) = gateway_cluster(1, {"default": "http://127.0.0.1:9/mcp"}, key_prefix, GW_ARGS)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(gw.url, json=init, headers={"Accept": "application/json, text/event-stream"})
        assert r.status_code == 503 and r.headers.get("retry-after")
        assert r.json()["id"] == 1 and r.json()["error"]["message"]
        ready = await http.get(f"{gw.base_url}/readyz")
        assert ready.status_code == 503


async def test_embedded_store_process_says_so_and_serves(sdk_upstream: StartSdkUpstream, procs: ProcessGroup) -> None:
    upstream = sdk_upstream(event_store=True)
    port = free_port()
    proc = procs.start(
        "gateway-embedded",
        [
            sys.executable,
            "-m",
            "gateway",
            "--port",
            str(port),
            "--upstream",
            upstream,
            "--log-format",
            "text",
        ],
    )
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    assert "EMBEDDED in-process store" in proc.log_tail(200)
    async with sdk_client(f"http://127.0.0.1:{port}/mcp") as (client, _):
        result, progress = await call_with_progress(client, "slow_count", {"steps": 3, "delay": 0.01})
        assert text_of(result) == "counted 3" and len(progress) == 3
