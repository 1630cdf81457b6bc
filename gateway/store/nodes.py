"""Questions that only the node owning a channel can answer, sent to that node on a Cluster.

redis-py's cluster client routes a command by its key; a command without one goes where its
`COMMAND_FLAGS` say (a default node, a random one, every primary). `PUBSUB SHARDNUMSUB` is a
default-node command there, and a node answers it for its own subscribers only: asked about a
channel whose slot another primary owns, it says 0 without a redirection. A liveness check that
asked one node about every replica's presence channel saw the replicas whose channels live
elsewhere as gone (issue 30). So the channels are grouped by the primary that owns their slot,
and each primary is asked about its own; a channel its owner reports empty is asked of the other
primaries too, in case the client's slot map is stale. tests/test_cluster_routing.py lists every command the
gateway sends with the route redis-py gives it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster

from gateway.store.client import Redis

SINGLE_NODE = "primary"  # what answered on a single Redis or under Sentinel: the one primary


@dataclass(frozen=True)
class Subscribers:
    """A shard channel's subscriber count, and the node that counted them (evidence for logs)."""

    count: int
    node: str


async def shard_subscribers(redis: Redis, channels: Sequence[str]) -> dict[str, Subscribers]:
    """`PUBSUB SHARDNUMSUB` for `channels`, each answered by the primary that owns its slot."""
    if not channels:
        return {}
    if not isinstance(redis, RedisCluster):
        reply: Any = await redis.pubsub_shardnumsub(*channels)
        return {_text(channel): Subscribers(int(count), SINGLE_NODE) for channel, count in reply}
    await redis.initialize()  # the slot map (idempotent once loaded)
    owners: dict[str, tuple[ClusterNode, list[str]]] = {}
    for channel in channels:
        node = redis.get_node_from_key(channel)
        owners.setdefault(node.name, (node, []))[1].append(channel)
    replies: list[Any] = await asyncio.gather(
        *(redis.pubsub_shardnumsub(*asked, target_nodes=node) for node, asked in owners.values())
    )
    counted: dict[str, Subscribers] = {}
    for name, reply in zip(owners, replies, strict=True):
        for channel, count in reply:
            counted[_text(channel)] = Subscribers(int(count), name)
    unheard = [c for c, s in counted.items() if s.count == 0]
    if unheard:
        await _ask_the_others(redis, unheard, counted)
    return counted


async def _ask_the_others(redis: RedisCluster, channels: list[str], counted: dict[str, Subscribers]) -> None:
    """A channel its owner reports empty is asked of every other primary too: a slot map that is
    stale (a failover, a slot migration) may have named the wrong owner. Only a dead replica's
    channel gets here in steady state, so the extra round trip is rare; a primary that cannot
    answer is skipped (its owner already said 0)."""
    owner = {c: counted[c].node for c in channels}
    primaries = redis.get_primaries()
    replies: list[Any] = await asyncio.gather(
        *(redis.pubsub_shardnumsub(*channels, target_nodes=node) for node in primaries), return_exceptions=True
    )
    for node, reply in zip(primaries, replies, strict=True):
        if isinstance(reply, BaseException):
            continue
        for channel, count in reply:
            name = _text(channel)
            if int(count) > 0 and node.name != owner[name]:
                counted[name] = Subscribers(counted[name].count + int(count), node.name)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
