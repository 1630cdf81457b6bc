"""What is particular to a real 3-primary Redis Cluster (one replica each): sessions spread over
the primaries, and the store client is a Cluster client with sharded pub/sub. Core flows and a
primary killed mid-call run on every topology in `test_store_topologies.py`."""

from __future__ import annotations

from collections import Counter

from redis.asyncio.cluster import RedisCluster

from gateway.store.client import connect, ping
from gateway.store.keys import Keys
from tests.integration.careful_client import CarefulClient
from tests.integration.conftest import StartGateways, StartSdkUpstream
from tests.integration.redis_topologies import LocalCluster, sharded_pubsub_roundtrip
from tests.integration.store_flows import GW_ARGS


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


async def test_store_client_is_a_cluster_client_with_sharded_pubsub(redis_cluster: LocalCluster) -> None:
    client = connect(redis_cluster.seed_url, cluster=True, max_connections=8)
    try:
        assert isinstance(client, RedisCluster)
        channels = [f"mcpgw-t:{{s{i}}}:n:x" for i in range(12)]  # slots on every primary
        assert await sharded_pubsub_roundtrip(client, channels) == set(channels)
        await ping(client)
    finally:
        await client.aclose()
