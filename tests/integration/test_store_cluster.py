"""The gateway on a real 3-primary Redis Cluster (one replica each): core flows through three
replicas, sessions spread over the primaries, and a primary killed mid-call (its replica is
promoted; the gateway follows without a restart)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.store.client import connect, ping
from gateway.store.keys import Keys
from tests.integration.careful_client import CarefulClient
from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.redis_topologies import LocalCluster, sharded_pubsub_roundtrip, wait_until
from tests.integration.store_flows import GW_ARGS, Store, core_flows, failover


@pytest.fixture
async def cluster_store(redis_cluster: LocalCluster, key_prefix: str) -> AsyncIterator[Store]:
    client = RedisCluster.from_url(redis_cluster.seed_url)
    try:
        yield Store(client, key_prefix)
    finally:
        await client.aclose()


async def test_core_flows_on_cluster(
    redis_cluster: LocalCluster,
    cluster_store: Store,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *redis_cluster.gateway_args()))
    await core_flows(gateways, load_balancer(gateways), cluster_store)


async def test_sessions_spread_over_the_primaries(
    redis_cluster: LocalCluster, sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=False)
    gateways = gateway_cluster(2, {"default": upstream}, key_prefix, (*GW_ARGS, *redis_cluster.gateway_args()))
    keys = Keys(key_prefix)
    homes: Counter[int] = Counter()
    for i in range(24):  # P(one of three primaries gets none of 24 random sessions) < 0.02 %
        async with CarefulClient(gateways[i % 2].url) as client:
            await client.initialize()
            assert client.session_id is not None
            record = keys.session(client.session_id)
        home = redis_cluster.primary_for(record)
        with home.client() as direct:  # the record really lives on that primary
            assert direct.exists(record) == 1
        homes[home.port] += 1
    assert set(homes) == {n.port for n in redis_cluster.primaries()}, homes


async def test_primary_killed_mid_call_replica_promoted(
    redis_cluster: LocalCluster,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *redis_cluster.gateway_args()))
    topology = ClusterTopology(redis_cluster, Keys(key_prefix))
    figures = await failover(gateways, load_balancer(gateways), topology)
    print(figures.line("cluster"))
    assert figures.events_lost_silently == 0
    assert figures.readyz_down_seen
    wait_until("the replica took over the slots", redis_cluster.healthy, timeout=20)
    assert topology.killed and topology.killed[0] not in {n.port for n in redis_cluster.primaries()}


class ClusterTopology:
    def __init__(self, cluster: LocalCluster, keys: Keys) -> None:
        self.cluster = cluster
        self.keys = keys
        self.killed: list[int] = []

    def same_home(self, session_a: str, session_b: str) -> bool:
        home = self.cluster.primary_for
        return home(self.keys.session(session_a)).port == home(self.keys.session(session_b)).port

    def kill_primary_of(self, session_id: str) -> None:
        victim = self.cluster.primary_for(self.keys.session(session_id))
        self.killed.append(victim.port)
        victim.kill()


async def test_store_client_is_a_cluster_client_with_sharded_pubsub(redis_cluster: LocalCluster) -> None:
    client = connect(redis_cluster.seed_url, cluster=True, max_connections=8)
    try:
        assert isinstance(client, RedisCluster)
        channels = [f"mcpgw-t:{{s{i}}}:n:x" for i in range(12)]  # slots on every primary
        assert await sharded_pubsub_roundtrip(client, channels) == set(channels)
        await ping(client)
    finally:
        await client.aclose()
