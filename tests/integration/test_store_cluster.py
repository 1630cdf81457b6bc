"""What is particular to a real 3-primary Redis Cluster (one replica each): sessions spread over
the primaries, and the store client is a Cluster client with sharded pub/sub. Core flows and a
primary killed mid-call run on every topology in `test_store_topologies.py`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from redis.asyncio.cluster import RedisCluster

from gateway.inspection import Inspector
from gateway.store.client import connect, ping, pubsub
from gateway.store.keys import Keys
from gateway.store.nodes import shard_subscribers
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
    # SCAN walks every primary (redis-py's cluster scan_iter: one cursor per primary), so the
    # operator's inspection lists the sessions of every shard, and every live replica
    store = connect(redis_cluster.seed_url, cluster=True, max_connections=8)
    try:
        inspector = Inspector(store, keys)
        assert len(await inspector.sessions(streams=False)) == 24
        assert len(await inspector.replicas()) == 2
    finally:
        await store.aclose()


async def test_store_client_is_a_cluster_client_with_sharded_pubsub(redis_cluster: LocalCluster) -> None:
    client = connect(redis_cluster.seed_url, cluster=True, max_connections=8)
    try:
        assert isinstance(client, RedisCluster)
        channels = [f"mcpgw-t:{{s{i}}}:n:x" for i in range(12)]  # slots on every primary
        assert await sharded_pubsub_roundtrip(client, channels) == set(channels)
        await ping(client)
    finally:
        await client.aclose()


async def test_shard_subscribers_are_counted_by_the_primary_owning_each_channel(redis_cluster: LocalCluster) -> None:
    """A node counts only its own shard subscribers and answers 0 for a channel it does not own
    (no redirection): asked of one node, replicas whose presence lives elsewhere looked dead."""
    client = connect(redis_cluster.seed_url, cluster=True, max_connections=8)
    listener = await pubsub(client)
    try:
        channels = [f"mcpgw-t:presence:r{i}" for i in range(12)]
        owners = {c: redis_cluster.primary_for(c).port for c in channels}
        assert len(set(owners.values())) == 3, owners  # the channels live on every primary
        subscribed = [c for port in set(owners.values()) for c in [c for c in channels if owners[c] == port][:2]]
        await listener.ssubscribe(*subscribed)  # two on each primary
        for _ in range(60):  # the subscribe confirmations, one connection per node
            await listener.get_sharded_message(timeout=0.05)
        one_node: Any = await client.pubsub_shardnumsub(*channels)  # redis-py: the default node only
        assert sum(int(n) for _, n in one_node) == 2, "the bug's premise: one node sees its own only"
        counted = await shard_subscribers(client, channels)
        assert {c: s.count for c, s in counted.items()} == {c: int(c in subscribed) for c in channels}
        assert {c: int(s.node.rsplit(":", 1)[1]) for c, s in counted.items()} == owners
    finally:
        await listener.aclose()
        await client.aclose()
