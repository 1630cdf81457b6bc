"""The gateway on a real primary + replica watched by three Sentinels: core flows through three
replicas, and the primary SIGKILLed in the middle of a long streamed call (the Sentinels promote
the replica; the gateway follows without a restart)."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.store.client import connect
from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.redis_topologies import LocalSentinels, sharded_pubsub_roundtrip, wait_until
from tests.integration.store_flows import GW_ARGS, Store, core_flows, failover


@pytest.fixture
async def sentinel_store(redis_sentinels: LocalSentinels, key_prefix: str) -> AsyncIterator[Store]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_sentinels.primary.port)
    try:
        yield Store(client, key_prefix)
    finally:
        await client.aclose()


async def test_core_flows_on_sentinel(
    redis_sentinels: LocalSentinels,
    sentinel_store: Store,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *redis_sentinels.gateway_args()))
    await core_flows(gateways, load_balancer(gateways), sentinel_store)
    with redis_sentinels.replica.client() as replica:  # the data went through the primary the Sentinels named
        assert replica.info("replication")["role"] == "slave"


class SentinelTopology:
    def __init__(self, setup: LocalSentinels) -> None:
        self.setup = setup

    def same_home(self, session_a: str, session_b: str) -> bool:
        return True  # one primary holds everything

    def kill_primary_of(self, session_id: str) -> None:
        self.setup.primary.kill()


async def test_primary_sigkilled_mid_streamed_call(
    redis_sentinels: LocalSentinels,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *redis_sentinels.gateway_args()))
    assert redis_sentinels.ready_for_failover()
    figures = await failover(gateways, load_balancer(gateways), SentinelTopology(redis_sentinels))
    print(figures.line("sentinel"))
    assert figures.events_lost_silently == 0
    assert figures.readyz_down_seen
    wait_until(
        "the Sentinels name the replica as primary",
        lambda: redis_sentinels.master_port() == redis_sentinels.replica.port,
        timeout=20,
    )
    assert all(gw.proc.alive() for gw in gateways), "no replica restarted or died"


async def test_store_client_follows_the_sentinels_with_sharded_pubsub(redis_sentinels: LocalSentinels) -> None:
    addrs = tuple(("127.0.0.1", s.port) for s in redis_sentinels.sentinels)
    client = connect("redis://127.0.0.1/0", sentinels=addrs, max_connections=4, pool_timeout=1.0)
    try:
        await client.set("mcpgw-t:{x}:probe", "1")
        with redis_sentinels.primary.client() as direct:  # the write went to the Sentinels' primary
            assert direct.get("mcpgw-t:{x}:probe") == b"1"
        channels = ["mcpgw-t:{a}:n:x", "mcpgw-t:{b}:n:y"]
        assert await sharded_pubsub_roundtrip(client, channels) == set(channels)
        # bounded: the pool is the blocking Sentinel pool with the configured size
        assert client.connection_pool.max_connections == 4
    finally:
        await client.aclose()


class LossyFailover(SentinelTopology):
    """The replica is frozen (SIGSTOP) while the stream keeps writing, then the primary dies and the
    replica resumes: it is promoted without the newest writes, which asynchronous replication lost."""

    unreplicated = 0  # replication bytes the primary had and the promoted replica never got

    def kill_primary_of(self, session_id: str) -> None:
        with self.setup.replica.client() as replica:
            frozen_at = int(replica.info("replication")["slave_repl_offset"])
        self.setup.replica.proc.signal_group(signal.SIGSTOP)
        time.sleep(0.8)  # ~3 steps of the call reach the primary only
        with self.setup.primary.client() as primary:
            self.unreplicated = int(primary.info("replication")["master_repl_offset"]) - frozen_at
        self.setup.primary.kill()
        self.setup.replica.proc.signal_group(signal.SIGCONT)


async def test_writes_lost_by_the_failover_are_never_skipped(
    redis_sentinels: LocalSentinels,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *redis_sentinels.gateway_args()))
    topology = LossyFailover(redis_sentinels)
    figures = await failover(gateways, load_balancer(gateways), topology)
    print(figures.line("sentinel, lost writes"), f"({topology.unreplicated} bytes never replicated)")
    assert topology.unreplicated > 0, "the promoted replica really missed writes"
    # the call ends with its complete result (every event once) or a JSON-RPC error for its id
    assert figures.events_lost_silently == 0
