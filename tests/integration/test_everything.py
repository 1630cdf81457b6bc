"""`@modelcontextprotocol/server-everything` (streamableHttp) behind three replicas and HAProxy."""

from __future__ import annotations

import asyncio

from tests.integration.careful_client import CarefulClient
from tests.integration.conftest import StartGateways, StartLoadBalancer
from tests.integration.test_failover import GW_ARGS, assert_exactly_once, kill_pid, pump_pid


async def test_long_running_operation_survives_sigkill(
    everything_upstream: str,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    gateways = gateway_cluster(3, {"default": everything_upstream}, key_prefix, GW_ARGS)
    lb = load_balancer(gateways)
    steps = 8
    async with CarefulClient(lb, read_timeout=20) as client:
        await client.initialize()
        sid = client.session_id
        assert sid is not None
        tools = await client.request("tools/list")
        assert "trigger-long-running-operation" in {t["name"] for t in tools["result"]["tools"]}

        async def killer() -> None:
            await asyncio.sleep(1.2)
            kill_pid(gateways, await pump_pid(redis_url, key_prefix, sid))

        task = asyncio.ensure_future(killer())
        result = await asyncio.wait_for(
            client.call_tool_resumable(
                "trigger-long-running-operation", {"duration": 4, "steps": steps}, resume_timeout=30
            ),
            60,
        )
        await task
    assert "result" in result.response, result.response
    assert_exactly_once([p["progress"] for p in result.progress()], steps)
