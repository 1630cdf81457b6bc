"""ResponseStore on a real Redis: hits, the remaining ttl, expiry (PX and the stored deadline),
generations (a bump makes every older entry a miss; an answer fetched across a bump is not kept)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.crc import key_slot

from gateway.store.keys import Keys
from gateway.store.responses import ResponseStore
from tests.clocks import Clock

MAX_TTL = 86_400_000


async def test_miss_store_hit_with_the_remaining_ttl(redis: aioredis.Redis, keys: Keys) -> None:
    store = ResponseStore(redis, keys, max_ttl_ms=MAX_TTL, clock=Clock(1_000_000.0))
    miss = await store.lookup("default", "tools", ["d:public"])
    assert miss.hit is None and miss.generation == ""  # no generation yet: the first store makes one
    assert await store.store("default", "tools", "d:public", miss.generation, b'{"tools": []}', 30_000)
    found = await store.lookup("default", "tools", ["d:p:alice", "d:public"])
    assert found.hit is not None and found.hit.result == {"tools": []}
    assert 0 < found.hit.remaining_ms <= 30_000
    assert 0 < await redis.pttl(keys.cache_entry("default", "tools", "d:public")) <= 30_000
    # other pools and families see nothing
    assert (await store.lookup("other", "tools", ["d:public"])).hit is None
    assert (await store.lookup("default", "prompts", ["d:public"])).hit is None


async def test_the_first_digest_wins(redis: aioredis.Redis, keys: Keys) -> None:
    store = ResponseStore(redis, keys, max_ttl_ms=MAX_TTL)
    assert await store.store("default", "read:x", "d:p:alice", "", b'{"who": "alice"}', 30_000)
    generation = (await store.lookup("default", "read:x", ["d:public"])).generation
    assert await store.store("default", "read:x", "d:public", generation, b'{"who": "all"}', 30_000)
    alice = await store.lookup("default", "read:x", ["d:p:alice", "d:public"])
    bob = await store.lookup("default", "read:x", ["d:p:bob", "d:public"])
    assert alice.hit and alice.hit.result == {"who": "alice"}
    assert bob.hit and bob.hit.result == {"who": "all"}


async def test_never_served_past_the_stored_deadline(redis: aioredis.Redis, keys: Keys) -> None:
    clock = Clock(1_000_000.0)
    store = ResponseStore(redis, keys, max_ttl_ms=MAX_TTL, clock=clock)
    await store.store("default", "tools", "d:public", "", b"{}", 10_000)
    clock.now += 9.0
    found = await store.lookup("default", "tools", ["d:public"])
    assert found.hit is not None and found.hit.remaining_ms <= 1000
    clock.now += 1.0  # the deadline, while Redis still holds the key
    assert (await store.lookup("default", "tools", ["d:public"])).hit is None


async def test_redis_expiry_ends_an_entry(redis: aioredis.Redis, keys: Keys) -> None:
    store = ResponseStore(redis, keys, max_ttl_ms=MAX_TTL)
    await store.store("default", "tools", "d:public", "", b"{}", 50)
    entry = keys.cache_entry("default", "tools", "d:public")
    # Polls until Redis expired the key (no timing asserted). Not until the lookup misses: the
    # entry's own deadline, from the gateway's clock before the store's round trip, can pass a
    # few ms before Redis's TTL does (seen on a slow machine).
    for _ in range(200):
        if not await redis.exists(entry):
            break
        await asyncio.sleep(0.02)
    assert await redis.exists(entry) == 0
    assert (await store.lookup("default", "tools", ["d:public"])).hit is None


async def test_a_bump_makes_older_entries_misses_and_refuses_late_answers(redis: aioredis.Redis, keys: Keys) -> None:
    store = ResponseStore(redis, keys, max_ttl_ms=MAX_TTL)
    await store.store("default", "tools", "d:public", "", b'{"v": 1}', 30_000)
    seen = await store.lookup("default", "tools", ["d2:public"])  # a miss in flight
    await store.bump("default", "tools")
    assert (await store.lookup("default", "tools", ["d:public"])).hit is None
    # the in-flight answer may predate the change: not kept
    assert not await store.store("default", "tools", "d2:public", seen.generation, b'{"v": 1}', 30_000)
    fresh = await store.lookup("default", "tools", ["d:public"])
    assert fresh.generation not in ("", seen.generation)
    assert await store.store("default", "tools", "d:public", fresh.generation, b'{"v": 2}', 30_000)
    again = await store.lookup("default", "tools", ["d:public"])
    assert again.hit and again.hit.result == {"v": 2}
    assert (await store.lookup("default", "prompts", ["d:public"])).generation == ""  # other families untouched


async def test_the_generation_outlives_every_entry_of_its_family(redis: aioredis.Redis, keys: Keys) -> None:
    store = ResponseStore(redis, keys, max_ttl_ms=MAX_TTL)
    gen_key = keys.cache_generation("default", "tools")
    seen = await store.lookup("default", "tools", ["d:public"])
    await store.bump("default", "tools")  # a notification with no entry yet still refuses the miss in flight
    assert MAX_TTL - 5_000 < await redis.pttl(gen_key) <= MAX_TTL
    assert not await store.store("default", "tools", "d:public", seen.generation, b"{}", 60_000)
    generation = (await store.lookup("default", "tools", ["d:public"])).generation
    await redis.pexpire(gen_key, 1_000)
    assert await store.store("default", "tools", "d:public", generation, b"{}", 60_000)  # a longer entry extends it
    assert await redis.pttl(gen_key) > 55_000


async def test_a_lost_generation_never_brings_old_entries_back(redis: aioredis.Redis, keys: Keys) -> None:
    """An evicted or expired generation key (maxmemory, FLUSHDB of it) makes the family a miss."""
    store = ResponseStore(redis, keys, max_ttl_ms=MAX_TTL)
    await store.store("default", "tools", "old:public", "", b'{"v": "old"}', 30_000)
    await store.bump("default", "tools")
    await redis.delete(keys.cache_generation("default", "tools"))
    assert (await store.lookup("default", "tools", ["old:public"])).hit is None
    assert await store.store("default", "tools", "new:public", "", b'{"v": "new"}', 30_000)
    assert (await store.lookup("default", "tools", ["old:public"])).hit is None
    found = await store.lookup("default", "tools", ["new:public"])
    assert found.hit and found.hit.result == {"v": "new"}


def test_a_lookup_and_its_store_touch_one_hash_slot(keys: Keys) -> None:
    """Redis Cluster: the scripts' keys (generation and entries of a family) share one slot."""
    for family in ("tools", "read:0123abcd"):
        slots = {
            key_slot(key.encode())
            for key in (
                keys.cache_generation("default", family),
                keys.cache_entry("default", family, "d:public"),
                keys.cache_entry("default", family, "d:p:alice"),
            )
        }
        assert len(slots) == 1
