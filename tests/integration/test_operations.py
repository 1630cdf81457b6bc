"""Operations with real processes: graceful drain on SIGTERM, readiness, metrics."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.integration.careful_client import CarefulClient, ReceivedEvent
from tests.integration.clients import call_with_progress, sdk_client, text_of
from tests.integration.conftest import GatewayProc, StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.test_failover import GW_ARGS, assert_exactly_once, pump_pid


async def live_children(redis_url: str, key_prefix: str, parent: int, timeout: float = 15.0) -> set[int]:
    """Pids of the live replicas (liveness keys) that are child processes of `parent`."""
    client = aioredis.from_url(redis_url)
    found: set[int] = set()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = {int(k.decode().split(":")[-2]) async for k in client.scan_iter(match=f"{key_prefix}:replica:*")}
            found = {pid for pid in pids if parent_of(pid) == parent}
            if len(found) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    return found


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def by_pid(gateways: list[GatewayProc], pid: int) -> GatewayProc:
    (gateway,) = [g for g in gateways if g.proc.pid == pid]
    return gateway


async def test_sigterm_drains_without_losing_events(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, "--drain-timeout", "5"))
    lb = load_balancer(gateways)
    steps = 20
    async with CarefulClient(lb, read_timeout=20) as client:
        await client.initialize()
        sid = client.session_id
        assert sid is not None
        drained: list[tuple[GatewayProc, float, int | None]] = []

        async def terminator() -> None:
            await asyncio.sleep(0.8)
            victim = by_pid(gateways, await pump_pid(redis_url, key_prefix, sid))
            started = time.monotonic()
            victim.proc.popen.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(victim.proc.popen.wait, 15)
            drained.append((victim, time.monotonic() - started, code))

        task = asyncio.ensure_future(terminator())
        result = await client.call_tool_resumable("slow_count", {"steps": steps, "delay": 0.2}, resume_timeout=30)
        await task
    assert result.response["result"]["content"][0]["text"] == f"counted {steps}"
    assert_exactly_once([p["progress"] for p in result.progress()], steps)
    assert result.connections >= 2, "the drain ended the client's connection; it resumed elsewhere"
    ((_, took, code),) = drained
    assert code == 0 and took < 8, (took, code)  # exited cleanly within the drain deadline


@pytest.mark.parametrize("workers", [1, 2])
async def test_drain_keeps_pumping_for_an_upstream_without_event_store(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, redis_url: str, workers: int
) -> None:
    """SIGTERM to the pumping replica in front of an upstream that cannot resume: the drain ends the
    client's connection at once, but the replica keeps pumping into Redis until the call ends, so the
    client (resumed on the other replica, which tails) gets every event and the result, and the tool
    ran once upstream. With `--workers 2` the flags reach both workers and each drains on SIGTERM."""
    upstream = sdk_upstream(event_store=False)
    args = (*GW_ARGS, "--drain-timeout", "15")
    (a,) = gateway_cluster(1, {"default": upstream}, key_prefix, (*args, "--workers", str(workers)))
    (b,) = gateway_cluster(1, {"default": upstream}, key_prefix, args)
    if workers > 1:  # every worker is a live replica of its own, started with the parent's flags
        assert len(await live_children(redis_url, key_prefix, a.proc.pid)) == workers
    steps = 20
    exited: list[int | None] = []

    async def wait_exit() -> None:
        exited.append(await asyncio.to_thread(a.proc.popen.wait, 30))

    waiter: list[asyncio.Future[None]] = []

    def terminate(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
        progressed = [e for e in events if isinstance(e.message, dict) and e.message.get("method")]
        if event.connection == 0 and len(progressed) == 3 and not waiter:
            a.proc.popen.send_signal(signal.SIGTERM)
            waiter.append(asyncio.ensure_future(wait_exit()))
        return False  # the drain itself ends the connection

    async with CarefulClient(a.url, read_timeout=20) as client:
        await client.initialize()
        result = await client.call_tool_resumable(
            "slow_count", {"steps": steps, "delay": 0.15}, drop_when=terminate, resume_url=b.url, resume_timeout=30
        )
    await asyncio.wait_for(waiter[0], 40)
    assert result.response["result"]["content"][0]["text"] == f"counted {steps}"
    assert_exactly_once([p["progress"] for p in result.progress()], steps)
    assert result.connections >= 2, "the drain ended the client's connection; it resumed on the other replica"
    assert exited == [0]
    async with httpx.AsyncClient() as http:
        stats = (await http.get(upstream.removesuffix("/mcp") + "/stats")).json()
    assert stats["started"] == 1 and stats["finished"] == 1, stats  # ran once, to the end


async def test_readyz_goes_unready_at_drain_start(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, (*GW_ARGS, "--drain-timeout", "3"))
    async with httpx.AsyncClient(timeout=10) as http, CarefulClient(gw.url) as client:
        assert (await http.get(f"{gw.base_url}/readyz")).status_code == 200
        await client.initialize()
        # an open standalone stream keeps the server in its drain phase for a moment
        async with http.stream("GET", gw.url, headers=client.headers(accept="text/event-stream", post=False)):
            gw.proc.popen.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
        code = await asyncio.to_thread(gw.proc.popen.wait, 10)
    assert code == 0


async def test_metrics_move_with_traffic(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS)

    async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
        text = (await http.get(gw.metrics_url)).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("mcpgw_") and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = values.get(name, 0.0) + float(value)
        return values

    async with httpx.AsyncClient(timeout=10) as http:
        before = await scrape(http)
        async with sdk_client(gw.url) as (client, _):
            result, progress = await call_with_progress(client, "slow_count", {"steps": 3, "delay": 0.01})
            assert text_of(result) == "counted 3" and len(progress) == 3
        after = await scrape(http)

    def total(values: dict[str, float], prefix: str) -> float:
        return sum(v for k, v in values.items() if k.startswith(prefix))

    assert total(after, "mcpgw_sessions_created_total") == total(before, "mcpgw_sessions_created_total") + 1
    assert total(after, "mcpgw_sessions_deleted_total") == total(before, "mcpgw_sessions_deleted_total") + 1
    assert total(after, "mcpgw_events_relayed_total") >= total(before, "mcpgw_events_relayed_total") + 4
    assert total(after, 'mcpgw_requests_total{era="2025-11-25",method="POST",status="200"}') >= 2
    assert total(after, "mcpgw_upstream_latency_seconds_count") > total(before, "mcpgw_upstream_latency_seconds_count")
