"""Takeovers that are always right (issue 30): on every store topology, streams dropped by their
client and resumed through the load balancer on another replica are never taken over while their
pump lives. The upstream has no event store, so a wrongful takeover cannot re-open the upstream
stream and the call would end with an error instead of its result."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.store.keys import Keys
from tests.integration.careful_client import CarefulClient, ReceivedEvent
from tests.integration.conftest import (
    GatewayProc,
    StartGateways,
    StartLoadBalancer,
    StartSdkUpstream,
    StoreUnderTest,
    gateway_argv,
    open_store,
)
from tests.integration.procs import ProcessGroup
from tests.integration.store_flows import GW_ARGS, assert_exactly_once

CALLS = 30
STEPS = 8
PROGRESS = "notifications/progress"


@pytest.fixture(params=["single", "sentinel", "cluster"])
async def topology(request: pytest.FixtureRequest) -> AsyncIterator[StoreUnderTest]:
    store = await open_store(request, request.param)
    try:
        yield store
    finally:
        await store.client.aclose()


def metric(text: str, name: str) -> float:
    """The sum of every sample of `name` (all label sets) in a Prometheus text exposition."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def scrape(gateways: list[GatewayProc], name: str) -> dict[int, float]:
    async with httpx.AsyncClient(timeout=10) as http:
        texts = await asyncio.gather(*(http.get(gw.metrics_url) for gw in gateways))
    return {gw.proc.pid: metric(t.text, name) for gw, t in zip(gateways, texts, strict=True)}


async def replica_ids(client: Any, keys: Keys, count: int) -> dict[int, str]:
    """pid -> replica id, from the replicas' liveness keys (`host:pid:nonce`)."""
    for _ in range(100):
        found = {keys.replica_of(k.decode()) async for k in client.scan_iter(match=keys.replica_pattern())}
        if len(found) >= count:
            return {int(r.split(":")[1]): r for r in found}
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} replica liveness keys, found {found}")


async def spread_presence(
    top: StoreUnderTest, gateways: list[GatewayProc], keys: Keys, procs: ProcessGroup, argv: dict[int, list[str]]
) -> dict[str, int]:
    """Restart replicas until their presence channels live on different primaries (replica ids are
    random); returns replica id -> the port of the primary owning its presence channel."""
    assert top.cluster is not None
    for _ in range(30):
        ids = await replica_ids(top.client, keys, len(gateways))
        live = {gw.proc.pid: ids[gw.proc.pid] for gw in gateways}
        homes = {replica: top.cluster.primary_for(keys.presence(replica)).port for replica in live.values()}
        if len(set(homes.values())) == len(gateways):
            return homes
        seen: set[int] = set()
        for i, gw in enumerate(gateways):
            home = homes[live[gw.proc.pid]]
            if home in seen:  # a new process: a new pid and nonce, so (likely) another slot
                gw.proc.stop()
                await top.client.delete(keys.replica(live[gw.proc.pid]))
                proc = procs.start(f"gateway-{gw.port}", argv[gw.port], env={"MCPGW_KEY_PREFIX": keys.prefix})
                proc.wait_http(f"{gw.base_url}/healthz", timeout=20)
                gateways[i] = GatewayProc(gw.url, gw.port, proc, gw.metrics_port)  # the same metrics listener
                break
            seen.add(home)
    raise AssertionError("could not place the replicas' presence channels on different primaries")


async def pump_replica(client: Any, keys: Keys, session: str, request_id: int) -> str:
    """The replica id of the pump of the call's stream (its lease outlives the call)."""
    claim: Any = await client.hget(keys.requests(session), f"r:{request_id}")
    assert claim is not None, "the call's request id was never claimed"
    holder: Any = await client.get(keys.lease(session, json.loads(claim)["stream"]))
    return str((holder or b"").decode() or json.loads(claim)["replica"])


async def test_dropped_streams_resume_on_another_replica_without_any_takeover(
    topology: StoreUnderTest,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    procs: ProcessGroup,
    key_prefix: str,
    redis_url: str,
) -> None:
    upstream = sdk_upstream(event_store=False)  # a wrongful takeover could not re-open the stream
    extra = (*GW_ARGS, *topology.gateway_args)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, extra)
    keys = Keys(key_prefix)
    if topology.cluster is not None:
        argv = {
            gw.port: gateway_argv(gw.port, {"default": upstream}, redis_url, extra, gw.metrics_port) for gw in gateways
        }
        assert all(a[0] == sys.executable for a in argv.values())
        homes = await spread_presence(topology, gateways, keys, procs, argv)
        assert len(set(homes.values())) == 3, f"presence channels must live on three primaries: {homes}"
    ids = await replica_ids(topology.client, keys, 3)
    lb = load_balancer(gateways)

    def drop(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
        progress = [e for e in events if isinstance(e.message, dict) and e.message.get("method") == PROGRESS]
        return event.connection == 0 and len(progress) >= 3

    elsewhere = 0
    for n in range(CALLS):
        before = await scrape(gateways, "mcpgw_resumes_total")
        async with CarefulClient(lb, read_timeout=20) as client:
            await client.initialize()
            assert client.session_id is not None
            rid = client.next_id()
            result = await asyncio.wait_for(
                client.call_tool_resumable(
                    "slow_count",
                    {"steps": STEPS, "delay": 0.1, "tag": f"t{n}"},
                    drop_when=drop,
                    resume_timeout=20,
                    resume_delay=0.3,
                    request_id=rid,
                ),
                60,
            )
            pumper = await pump_replica(topology.client, keys, client.session_id, rid)
        assert "result" in result.response, f"call {n}: {result.response}"
        assert result.response["result"]["content"][0]["text"] == f"counted {STEPS}"
        assert_exactly_once([p["progress"] for p in result.progress()], STEPS)
        event_ids = result.event_ids()
        assert len(event_ids) == len(set(event_ids)), f"call {n}: an event id arrived twice"
        assert result.connections >= 2, f"call {n}: the client's drop did not happen"
        after = await scrape(gateways, "mcpgw_resumes_total")
        resumed_on = [ids[pid] for pid in after if after[pid] > before[pid]]
        assert len(resumed_on) == 1, f"call {n}: one replica served the resume: {resumed_on}"
        elsewhere += resumed_on[0] != pumper
    assert elsewhere == CALLS, f"only {elsewhere} of {CALLS} resumes went to another replica"
    await asyncio.sleep(1.0)  # a late liveness check would have acted by now
    takeovers = await scrape(gateways, "mcpgw_takeovers_total")
    assert sum(takeovers.values()) == 0, f"{topology.name}: wrongful takeovers {takeovers}"
