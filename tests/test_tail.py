"""The multiplexed tail on a real Redis: one subscription per stream, wake-ups, adoption triggers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.store.eventlog import EventLog
from gateway.store.keys import Keys
from gateway.store.sessions import SessionRecord
from gateway.streams.liveness import Liveness
from gateway.streams.tail import Tail, Watch
from gateway.wire import cursor, protocol


def record() -> SessionRecord:
    session = protocol.new_session_id()
    return SessionRecord(id=session, pool="default", instance="http://x", upstream_sid="", protocol="2025-06-18")


@pytest.fixture
async def tail(redis: aioredis.Redis, keys: Keys) -> AsyncIterator[tuple[Tail, EventLog, list[Watch]]]:
    log = EventLog(redis, keys, maxlen=100, ttl=60)
    adopted: list[Watch] = []

    async def adopt(watch: Watch) -> None:
        adopted.append(watch)
        watch.done = True  # settle it, as the relay would once it pumps or finds it finished

    tail = Tail(redis, keys, log, Liveness(redis, keys, "me", ttl=5, interval=1), check_interval=0.05)
    tail.bind(adopt, lambda session, stream: True)  # streams held by "me" are pumped here
    await tail.start()
    task = asyncio.get_running_loop().create_task(tail.run())
    try:
        yield tail, log, adopted
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tail.aclose()


async def test_a_notification_wakes_the_stream_watch(
    tail: tuple[Tail, EventLog, list[Watch]], redis: aioredis.Redis, keys: Keys
) -> None:
    t, log, adopted = tail
    rec, stream = record(), cursor.new_stream_id()
    await log.open(rec.id, stream, kind="post", pending=(1,), owner="me")  # "me" pumps: not orphaned
    async with t.watching(rec, stream) as watch, t.watching(rec, stream) as same:
        assert watch is same and len(t) == 1  # one watch (one subscription) per stream
        assert watch.holder == "me"
        await log.append(rec.id, stream, "me", [("a", ""), ("b", "")], pending=(1,))
        await asyncio.wait_for(watch.wait(0, 5), 5)
        assert watch.seq == 2
    assert len(t) == 0 and adopted == []
    await asyncio.sleep(0.1)  # the monitor sends the batched SUNSUBSCRIBE
    assert (await redis.pubsub_shardnumsub(keys.notify(rec.id, stream)))[0][1] == 0


async def test_a_dead_holder_or_a_release_hands_the_stream_to_adopt(
    tail: tuple[Tail, EventLog, list[Watch]], keys: Keys
) -> None:
    t, log, adopted = tail
    rec, dead, released = record(), cursor.new_stream_id(), cursor.new_stream_id()
    await log.open(rec.id, dead, kind="post", pending=(1,), owner="gone")  # no key, no presence
    await log.open(rec.id, released, kind="post", pending=(1,), owner="me")
    async with t.watching(rec, dead) as w_dead, t.watching(rec, released) as w_released:
        for _ in range(100):
            if adopted:
                break
            await asyncio.sleep(0.02)
        assert adopted == [w_dead] and w_dead.holder == "gone"
        assert w_dead.cause == ("replica_gone", "liveness key absent, 0 presence subscriber(s) counted by primary")
        await log.release(rec.id, released, "me")  # SPUBLISH 'r': nobody holds it now
        for _ in range(100):
            if len(adopted) == 2:
                break
            await asyncio.sleep(0.02)
        assert adopted == [w_dead, w_released] and w_released.holder is None
        assert w_released.cause is not None and w_released.cause[0] == "handed_over"


async def test_a_plain_channel_counts_messages(tail: tuple[Tail, EventLog, list[Watch]], redis: aioredis.Redis) -> None:
    t, _, adopted = tail
    async with t.listening("mcpgw-test:{legacy:x}:n") as watch:
        await redis.spublish("mcpgw-test:{legacy:x}:n", b"1")
        await redis.spublish("mcpgw-test:{legacy:x}:n", b"1")
        for _ in range(100):
            if watch.seq == 2:
                break
            await asyncio.sleep(0.02)
        assert watch.seq == 2
    assert adopted == []  # a plain channel is never adopted
