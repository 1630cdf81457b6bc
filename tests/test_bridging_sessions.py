"""The upstream sessions the bridge holds, on a real Redis (the upstream side is a stub counting opens)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from gateway.bridging.onto_2025.handshake import Opened
from gateway.bridging.onto_2025.sessions import HeldSessions
from gateway.config.specs import Pool
from gateway.store.keys import Keys
from gateway.upstream.pools import Pools
from tests.clocks import Clock

A = "http://a/mcp"


class Upstream:
    def __init__(self) -> None:
        self.opened: list[Mapping[str, Any]] = []
        self.closed: list[str] = []

    async def open(self, pool: str, instance: str, capabilities: Mapping[str, Any], info: Mapping[str, Any]) -> Opened:
        self.opened.append(capabilities)
        return Opened(sid=f"s{len(self.opened)}", version="2025-11-25", result={})

    async def close(self, pool: str, instance: str, sid: str, version: str) -> None:
        self.closed.append(sid)


def held(redis: aioredis.Redis, keys: Keys, upstream: Upstream, clock: Clock, bound: int = 10) -> HeldSessions:
    pools = Pools((Pool("p", (A,)),))
    return HeldSessions(
        redis=redis, keys=keys, handshake=upstream, pools=pools, max_per_instance=bound, idle=60, clock=clock
    )


async def test_one_session_per_principal_and_capabilities(redis: aioredis.Redis, keys: Keys) -> None:
    upstream = Upstream()
    sessions = held(redis, keys, upstream, Clock())
    first = await sessions.get("p", A, "alice", {}, {})
    again = [await sessions.get("p", A, "alice", {}, {}) for _ in range(5)]
    assert {h.sid for h in again} == {first.sid}
    other_replica = held(redis, keys, upstream, Clock())
    assert (await other_replica.get("p", A, "alice", {}, {})).sid == first.sid
    assert (await sessions.get("p", A, "bob", {}, {})).sid != first.sid  # never across principals
    assert (await sessions.get("p", A, "alice", {"elicitation": {}}, {})).sid != first.sid
    assert len(upstream.opened) == 3 and await sessions.count(A) == 3


async def test_bounded_least_recently_used_goes(redis: aioredis.Redis, keys: Keys) -> None:
    upstream, clock = Upstream(), Clock()
    sessions = held(redis, keys, upstream, clock, bound=2)
    for who in ("a", "b"):
        clock.now += 1
        await sessions.get("p", A, who, {}, {})
    clock.now += 1
    await sessions.get("p", A, "a", {}, {})  # a is used again: b is the oldest
    clock.now += 1
    await sessions.get("p", A, "c", {}, {})
    assert upstream.closed == ["s2"] and await sessions.count(A) == 2


async def test_idle_sessions_are_reaped_once(redis: aioredis.Redis, keys: Keys) -> None:
    upstream, clock = Upstream(), Clock()
    sessions, other = held(redis, keys, upstream, clock), held(redis, keys, upstream, clock)
    old = await sessions.get("p", A, "a", {}, {})
    clock.now += 50
    await sessions.get("p", A, "b", {}, {})
    clock.now += 20
    assert await sessions.reap() + await other.reap() == 1
    assert upstream.closed == [old.sid]
    assert await sessions.by_digest(old.digest) is None
    assert (await sessions.get("p", A, "a", {}, {})).sid == "s3"  # a new one when needed again


async def test_forgotten_session_is_replaced(redis: aioredis.Redis, keys: Keys) -> None:
    upstream = Upstream()
    sessions = held(redis, keys, upstream, Clock())
    first = await sessions.get("p", A, "a", {}, {})
    await sessions.forget(first)
    assert (await sessions.get("p", A, "a", {}, {})).sid != first.sid


async def test_a_session_kept_for_a_waiting_call_outlives_the_idle_bound(redis: aioredis.Redis, keys: Keys) -> None:
    upstream, clock = Upstream(), Clock()
    sessions = held(redis, keys, upstream, clock)  # idle 60 s
    waiting = await sessions.get("p", A, "a", {}, {})
    await sessions.keep_until(waiting, clock.now + 600)  # a round open for 600 s
    await sessions.touch(waiting)  # a later ordinary use does not shorten it
    clock.now += 300
    assert await sessions.reap() == 0
    assert await redis.ttl(keys.bridge_session(waiting.digest)) > 300
    clock.now += 400
    assert await sessions.reap() == 1 and upstream.closed == [waiting.sid]
