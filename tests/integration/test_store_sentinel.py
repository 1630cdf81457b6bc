"""What is particular to a real primary + replica watched by three Sentinels: the store client
follows the Sentinels, and writes that asynchronous replication lost in a failover are never
skipped. Core flows and the primary killed mid-call run on every topology in
`test_store_topologies.py`."""

from __future__ import annotations

import signal
import time

from gateway.store.client import LanedRedis, connect
from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.redis_topologies import LocalSentinels, sharded_pubsub_roundtrip
from tests.integration.store_flows import GW_ARGS, SentinelFailover, failover


async def test_store_client_follows_the_sentinels_with_sharded_pubsub(redis_sentinels: LocalSentinels) -> None:
    addrs = tuple(("127.0.0.1", s.port) for s in redis_sentinels.sentinels)
    client = connect("redis://127.0.0.1/0", sentinels=addrs, max_connections=4, pool_timeout=1.0)
    try:
        await client.set("mcpgw-t:{x}:probe", "1")
        with redis_sentinels.primary.client() as direct:  # the write went to the Sentinels' primary
            assert direct.get("mcpgw-t:{x}:probe") == b"1"
        channels = ["mcpgw-t:{a}:n:x", "mcpgw-t:{b}:n:y"]
        assert await sharded_pubsub_roundtrip(client, channels) == set(channels)
        # bounded: the blocking Sentinel pool and the scripts' lane share the configured size
        assert client.connection_pool.max_connections == 3
        assert isinstance(client, LanedRedis) and client.lane is not None
    finally:
        await client.aclose()


class LossyFailover(SentinelFailover):
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
