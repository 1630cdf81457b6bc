"""The same flows on each store topology that has a primary to lose: a 3-primary Redis Cluster (one
replica each) and a primary + replica watched by three Sentinels. Core flows through three gateway
replicas, then a primary SIGKILLed in the middle of a long streamed call: the topology promotes its
replica and the gateway follows without a restart. What is particular to one topology lives in
`test_store_cluster.py` and `test_store_sentinel.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.store.keys import Keys
from tests.integration.conftest import GatewayProc, StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.redis_topologies import LocalCluster, LocalSentinels, wait_until
from tests.integration.store_flows import GW_ARGS, ClusterFailover, SentinelFailover, Store, core_flows, failover


@dataclass
class StoreTopology:
    name: str
    gateway_args: tuple[str, ...]
    store: Store  # a client that sees what the gateway wrote
    failover: ClusterFailover | SentinelFailover
    after_core_flows: Callable[[], bool] | None  # a check particular to the topology


@pytest.fixture(params=["cluster", "sentinel"])
async def topology(request: pytest.FixtureRequest, key_prefix: str) -> AsyncIterator[StoreTopology]:
    if request.param == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        client: aioredis.Redis | RedisCluster = RedisCluster.from_url(cluster.seed_url)
        failover_ = ClusterFailover(cluster, Keys(key_prefix))
        top = StoreTopology("cluster", cluster.gateway_args(), Store(client, key_prefix), failover_, None)
    else:
        sentinels: LocalSentinels = request.getfixturevalue("redis_sentinels")
        client = aioredis.Redis(host="127.0.0.1", port=sentinels.primary.port)

        def through_primary() -> bool:  # the data went through the primary the Sentinels named
            with sentinels.replica.client() as replica:
                return bool(replica.info("replication")["role"] == "slave")

        assert sentinels.ready_for_failover()
        store = Store(client, key_prefix)
        top = StoreTopology("sentinel", sentinels.gateway_args(), store, SentinelFailover(sentinels), through_primary)
    try:
        yield top
    finally:
        await client.aclose()


@pytest.fixture
def replicas(
    topology: StoreTopology,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> tuple[list[GatewayProc], str]:
    """Three gateway replicas on the topology in front of an SDK upstream with an event store, and
    the load balancer's URL."""
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *topology.gateway_args))
    return gateways, load_balancer(gateways)


async def test_core_flows(topology: StoreTopology, replicas: tuple[list[GatewayProc], str]) -> None:
    await core_flows(*replicas, topology.store)
    if topology.after_core_flows is not None:
        assert topology.after_core_flows()


async def test_primary_killed_mid_streamed_call(
    topology: StoreTopology, replicas: tuple[list[GatewayProc], str]
) -> None:
    gateways, lb = replicas
    figures = await failover(gateways, lb, topology.failover)
    print(figures.line(topology.name))
    assert figures.events_lost_silently == 0
    assert figures.readyz_down_seen
    wait_until(f"the {topology.name} promoted the replica", topology.failover.promoted, timeout=20)
    assert all(gw.proc.alive() for gw in gateways), "no gateway replica restarted or died"
