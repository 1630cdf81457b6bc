"""Replica liveness on a real Redis: a replica is alive while its key AND its presence hold."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from gateway.metrics import TAKEOVER_REASONS, Metrics
from gateway.store.keys import Keys
from gateway.streams.liveness import KEY_EXPIRED, PRESENCE_VANISHED, REPLICA_GONE, Liveness
from gateway.streams.tail import HANDED_OVER, ORPHANED_HERE


def liveness(redis: aioredis.Redis, keys: Keys, name: str, ttl: float = 5.0) -> Liveness:
    return Liveness(redis, keys, name, ttl=ttl, interval=ttl / 5)


async def test_alive_needs_both_the_key_and_the_presence_subscriber(redis: aioredis.Redis, keys: Keys) -> None:
    me, other = liveness(redis, keys, "me"), liveness(redis, keys, "other")
    assert await me.alive(["me", "other", "ghost"]) == {"me"}  # others: no key, no presence
    await other.beat()
    assert await me.alive(["other"]) == set()  # a key but no presence: not alive
    pubsub = redis.pubsub()
    await pubsub.ssubscribe(keys.presence("other"))
    await pubsub.get_message(timeout=1.0)
    try:
        assert await me.alive(["other"]) == {"other"}
        assert await me.is_alive("other") and await me.is_alive("me") and not await me.is_alive("ghost")
        await redis.delete(keys.replica("other"))
        assert await me.alive(["other"]) == set()  # presence but the key lapsed (paused): dead
        await other.beat()
    finally:
        await pubsub.aclose()  # the process "died": its sockets close
    assert await me.alive(["other"]) == set()


async def test_beat_reports_a_lapse(redis: aioredis.Redis, keys: Keys) -> None:
    me = liveness(redis, keys, "me", ttl=0.2)
    assert await me.beat() is False  # first beat: nothing to renew
    assert await me.beat() is True
    await asyncio.sleep(0.3)
    assert await me.beat() is False  # the key had expired: others may have taken our streams


async def test_run_calls_on_lapse_and_clear_drops_the_key(redis: aioredis.Redis, keys: Keys) -> None:
    lapses: list[int] = []

    async def on_lapse() -> None:
        lapses.append(1)

    me = Liveness(redis, keys, "me", ttl=0.3, interval=0.05)
    await me.beat()
    task = asyncio.get_running_loop().create_task(me.run(on_lapse=on_lapse))
    await asyncio.sleep(0.2)
    assert lapses == []
    await redis.delete(keys.replica("me"))  # as if the heartbeat had stalled past the TTL
    await asyncio.sleep(0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert lapses == [1] and me.lapses == 1
    await me.clear()
    assert await redis.exists(keys.replica("me")) == 0


async def test_verdicts_carry_each_sign_and_the_node_that_counted(redis: aioredis.Redis, keys: Keys) -> None:
    me, other = liveness(redis, keys, "me"), liveness(redis, keys, "other")
    assert (await me.verdicts(["ghost"]))["ghost"].reason == REPLICA_GONE
    await other.beat()
    gone = (await me.verdicts(["other", "me"]))["other"]  # this replica is never judged
    assert (gone.beating, gone.subscribers, gone.reason) == (True, 0, PRESENCE_VANISHED)
    assert gone.evidence() == "liveness key present, 0 presence subscriber(s) counted by primary"
    pubsub = redis.pubsub()
    await pubsub.ssubscribe(keys.presence("other"))
    await pubsub.get_message(timeout=1.0)
    try:
        assert (await me.verdicts(["other"]))["other"].alive
        await redis.delete(keys.replica("other"))
        paused = (await me.verdicts(["other"]))["other"]
        assert (paused.alive, paused.subscribers, paused.reason) == (False, 1, KEY_EXPIRED)
    finally:
        await pubsub.aclose()


def test_every_takeover_reason_is_served_by_the_metric() -> None:
    reasons = {KEY_EXPIRED, PRESENCE_VANISHED, REPLICA_GONE, HANDED_OVER, ORPHANED_HERE}
    assert reasons == set(TAKEOVER_REASONS)
    served = Metrics().render().decode()
    assert all(f'mcpgw_takeovers_total{{reason="{r}"}} 0.0' in served for r in reasons)
