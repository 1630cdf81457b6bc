"""EventLog on a real Redis (and a few mirrored on fakeredis): appends, fencing, leases, reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import fakeredis
import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.store.eventlog import END, MESSAGE, EventLog, LeaseLost, Meta, StreamVanished
from gateway.store.keys import Keys
from gateway.wire import cursor, protocol

FLUSH_DB = 15  # the only database these tests ever flush


@pytest.fixture
def session() -> str:
    return protocol.new_session_id()


@pytest.fixture
def stream() -> str:
    return cursor.new_stream_id()


@pytest.fixture(params=["redis", "fakeredis"])
def any_redis(request: pytest.FixtureRequest) -> aioredis.Redis:
    """The real Redis, then fakeredis: for the tests mirrored on both."""
    name = "redis" if request.param == "redis" else "fake_redis"
    client: aioredis.Redis = request.getfixturevalue(name)
    return client


def make_log(
    client: aioredis.Redis | fakeredis.FakeAsyncRedis,
    keys: Keys,
    *,
    maxlen: int = 1000,
    ttl: float = 60,
    lease_ttl: float = 5,
) -> EventLog:
    return EventLog(client, keys, maxlen=maxlen, ttl=ttl, lease_ttl=lease_ttl)  # type: ignore[arg-type]


async def new_stream(
    log: EventLog, session: str, stream: str, owner: str = "r1", pending: tuple[object, ...] = (1,)
) -> None:
    await log.create(session, stream, kind="post", pending=pending, owner=owner)


# --- create / append (both backends) ------------------------------------------------------------


async def test_create_and_append(any_redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(any_redis, keys)
    await log.create(session, stream, kind="post", pending=(1, "b"), owner="r1")
    assert await log.meta(session, stream) == Meta(kind="post", seq=0, pending=(1, "b"), uid="", done=False)
    assert await log.lease_holder(session, stream) == "r1"
    assert await log.first_seq(session, stream) is None

    assert await log.append(session, stream, "r1", [("a", "u1"), ("b", ""), ("c", "u3")], pending=("b",), uid="u3") == 3
    assert await log.append(session, stream, "r1", [("d", "")], pending=("b",)) == 4
    rows = await any_redis.xrange(keys.events(session, stream))
    assert [row[0] for row in rows] == [b"1-0", b"2-0", b"3-0", b"4-0"]
    entries = await log.read(session, stream, 0)
    assert [(e.seq, e.type, e.data, e.uid) for e in entries] == [
        (1, MESSAGE, "a", "u1"),
        (2, MESSAGE, "b", ""),
        (3, MESSAGE, "c", "u3"),
        (4, MESSAGE, "d", ""),
    ]
    # an empty uid keeps the last upstream id
    assert await log.meta(session, stream) == Meta(kind="post", seq=4, pending=("b",), uid="u3", done=False)
    assert await log.first_seq(session, stream) == 1


async def test_empty_append_renews_and_updates_pending(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream, pending=(1, 2))
    assert await log.append(session, stream, "r1", [], pending=(2,), uid="up-7") == 0
    meta = await log.meta(session, stream)
    assert meta is not None and (meta.seq, meta.pending, meta.uid) == (0, (2,), "up-7")
    assert await log.read(session, stream, 0) == []


async def test_final_append_writes_end_and_drops_lease(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    assert await log.append(session, stream, "r1", [("answer", "")], pending=(), final=True) == 2
    entries = await log.read(session, stream, 0)
    assert [(e.seq, e.type) for e in entries] == [(1, MESSAGE), (2, END)]
    assert entries[1].data == "" and entries[1].uid == ""
    meta = await log.meta(session, stream)
    assert meta is not None and meta.done and meta.seq == 2 and meta.pending == ()
    assert await log.lease_holder(session, stream) is None
    assert await any_redis.exists(keys.lease(session, stream)) == 0
    # a finished stream is never pumped again, and its old owner cannot write
    assert await log.acquire(session, stream, "r2") is False
    with pytest.raises(LeaseLost):
        await log.append(session, stream, "r1", [("late", "")], pending=())


async def test_append_by_non_owner_is_fenced(any_redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    await log.append(session, stream, "r1", [("one", "")], pending=(1,))
    with pytest.raises(LeaseLost):
        await log.append(session, stream, "r2", [("intruder", "x")], pending=(), uid="x", final=True)
    assert await any_redis.xlen(keys.events(session, stream)) == 1
    assert await log.meta(session, stream) == Meta(kind="post", seq=1, pending=(1,), uid="", done=False)
    assert await log.lease_holder(session, stream) == "r1"


async def test_append_after_meta_deleted_vanishes(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    await log.append(session, stream, "r1", [("one", "")], pending=(1,))
    # simulate a flushed store: every key under the prefix is gone
    doomed = [key async for key in any_redis.scan_iter(match=keys.pattern())]
    assert len(doomed) == 3
    for key in doomed:
        await any_redis.delete(key)
    with pytest.raises(StreamVanished):
        await log.append(session, stream, "r1", [("two", "")], pending=(1,))
    with pytest.raises(StreamVanished):
        await log.acquire(session, stream, "r1")
    assert await any_redis.exists(*log_keys(keys, session, stream)) == 0  # nothing was written
    assert await log.meta(session, stream) is None


def log_keys(keys: Keys, session: str, stream: str) -> tuple[str, str, str]:
    return keys.stream_keys(session, stream)


async def test_meta_vanished_while_lease_alive(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    await any_redis.delete(keys.meta(session, stream))
    with pytest.raises(StreamVanished):
        await log.append(session, stream, "r1", [("x", "")], pending=(1,))
    with pytest.raises(StreamVanished):
        await log.acquire(session, stream, "r2")
    assert await any_redis.exists(keys.events(session, stream)) == 0


# --- real Redis only --------------------------------------------------------------------------------


@pytest.fixture
async def flushable(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{FLUSH_DB}", parts.query, parts.fragment))
    client = aioredis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_flushdb_makes_stream_vanish(flushable: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    db = flushable.connection_pool.connection_kwargs.get("db")
    assert db == FLUSH_DB  # never flush anything else
    log = make_log(flushable, keys)
    await new_stream(log, session, stream)
    assert await log.append(session, stream, "r1", [("one", "")], pending=(1,)) == 1
    await flushable.flushdb()
    with pytest.raises(StreamVanished):
        await log.append(session, stream, "r1", [("two", "")], pending=(1,))
    with pytest.raises(StreamVanished):
        await log.acquire(session, stream, "r1")
    assert await flushable.exists(*keys.stream_keys(session, stream)) == 0
    assert await log.meta(session, stream) is None
    assert cursor.decide(1, meta_seq=None, first_retained=await log.first_seq(session, stream)) == cursor.Gap(
        "the stream's state was lost (store restarted or expired)"
    )


async def test_acquire_waits_for_lease_expiry(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys, lease_ttl=0.2)
    await new_stream(log, session, stream)
    assert 0 < await redis.pttl(keys.lease(session, stream)) <= 200
    assert await log.acquire(session, stream, "r2") is False
    assert await log.lease_holder(session, stream) == "r1"
    await asyncio.sleep(0.3)
    assert await log.lease_holder(session, stream) is None
    # the old owner lost its lease: its writes are fenced
    with pytest.raises(LeaseLost):
        await log.append(session, stream, "r1", [("stale", "")], pending=(1,))
    assert await log.acquire(session, stream, "r2") is True
    assert await log.lease_holder(session, stream) == "r2"
    assert await log.append(session, stream, "r2", [("fresh", "")], pending=(1,)) == 1
    with pytest.raises(LeaseLost):
        await log.append(session, stream, "r1", [("stale", "")], pending=(1,))
    assert [e.data for e in await log.read(session, stream, 0)] == ["fresh"]


async def test_acquire_own_live_lease_is_false(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys)
    await new_stream(log, session, stream)
    assert await log.acquire(session, stream, "r1") is False  # SET NX: held, even by the caller


async def test_no_double_pump(redis: aioredis.Redis, redis_url: str, keys: Keys, session: str) -> None:
    log = make_log(redis, keys, lease_ttl=0.2)
    streams = [cursor.new_stream_id() for _ in range(20)]
    for stream in streams:
        await new_stream(log, session, stream, owner="dead")
    await asyncio.sleep(0.3)  # every lease expired
    others = [aioredis.from_url(redis_url) for _ in range(3)]
    try:
        logs = [log, *(make_log(client, keys, lease_ttl=5) for client in others)]
        for stream in streams:
            attempts = (lg.acquire(session, stream, f"r{i}") for i, lg in enumerate(logs))
            results = await asyncio.gather(*attempts)
            assert sum(results) == 1, results
            winner = f"r{results.index(True)}"
            assert await log.lease_holder(session, stream) == winner
    finally:
        for client in others:
            await client.aclose()


async def test_renew_keeps_lease_past_ttl(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys, lease_ttl=0.2)
    await new_stream(log, session, stream)
    for _ in range(6):  # 0.48 s, more than twice the lease TTL
        await asyncio.sleep(0.08)
        assert await log.renew(session, stream, "r1") is True
    assert await log.lease_holder(session, stream) == "r1"
    assert await log.acquire(session, stream, "r2") is False
    assert await log.renew(session, stream, "r2") is False
    await asyncio.sleep(0.3)
    assert await log.renew(session, stream, "r1") is False  # expired: renewing does not resurrect it
    assert await log.lease_holder(session, stream) is None
    assert await log.acquire(session, stream, "r2") is True


async def test_append_renews_lease(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys, lease_ttl=0.2)
    await new_stream(log, session, stream)
    for i in range(6):
        await asyncio.sleep(0.08)
        await log.append(session, stream, "r1", [(str(i), "")], pending=(1,))
    assert await log.lease_holder(session, stream) == "r1"


async def test_release_only_by_owner(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys)
    await new_stream(log, session, stream)
    await log.release(session, stream, "r2")
    assert await log.lease_holder(session, stream) == "r1"
    await log.release(session, stream, "r1")
    assert await log.lease_holder(session, stream) is None
    assert await log.acquire(session, stream, "r2") is True
    await log.release(session, stream, "r1")  # a stale owner's release does nothing
    assert await log.lease_holder(session, stream) == "r2"


async def test_read_in_batches(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys)
    await new_stream(log, session, stream)
    await log.append(session, stream, "r1", [(f"e{i}", "") for i in range(1, 26)], pending=(1,))
    got, after = [], 0
    while batch := await log.read(session, stream, after, count=7):
        assert len(batch) <= 7
        got.extend(batch)
        after = batch[-1].seq
    assert [e.seq for e in got] == list(range(1, 26))
    assert [e.data for e in got] == [f"e{i}" for i in range(1, 26)]
    assert [e.seq for e in await log.read(session, stream, 20)] == [21, 22, 23, 24, 25]
    assert await log.read(session, stream, 25) == []
    assert await log.read(session, protocol.new_session_id(), 0) == []


async def test_wait_returns_concurrent_append(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys)
    await new_stream(log, session, stream)
    await log.append(session, stream, "r1", [("old", "")], pending=(1,))
    appended_at: list[float] = []

    async def writer() -> None:
        await asyncio.sleep(0.2)
        appended_at.append(time.monotonic())
        await log.append(session, stream, "r1", [("new1", ""), ("new2", "")], pending=())

    started = time.monotonic()
    task = asyncio.create_task(writer())
    entries = await log.wait(session, stream, 1, timeout=3)
    returned = time.monotonic()
    await task
    assert [(e.seq, e.data) for e in entries] == [(2, "new1"), (3, "new2")]
    assert appended_at and returned >= appended_at[0]
    assert 0.15 <= returned - started < 2


async def test_wait_returns_at_once_when_behind(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys)
    await new_stream(log, session, stream)
    await log.append(session, stream, "r1", [("a", ""), ("b", ""), ("c", "")], pending=(1,))
    started = time.monotonic()
    entries = await log.wait(session, stream, 1, timeout=3, count=1)
    assert time.monotonic() - started < 0.5
    assert [e.seq for e in entries] == [2]


async def test_wait_times_out_empty(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys)
    await new_stream(log, session, stream)
    started = time.monotonic()
    assert await log.wait(session, stream, 0, timeout=0.2) == []
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.5


async def test_trimming_makes_a_gap(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys, maxlen=10)
    await new_stream(log, session, stream)
    for start in range(0, 200, 10):
        await log.append(session, stream, "r1", [(f"e{i}", "") for i in range(start + 1, start + 11)], pending=(1,))
    meta = await log.meta(session, stream)
    assert meta is not None and meta.seq == 200
    first = await log.first_seq(session, stream)
    assert first is not None and 1 < first <= 191
    assert await redis.xlen(keys.events(session, stream)) < 200
    assert isinstance(cursor.decide(1, meta_seq=meta.seq, first_retained=first), cursor.Gap)
    assert cursor.decide(first - 1, meta_seq=meta.seq, first_retained=first) == cursor.Replay(first - 1)
    assert (await log.read(session, stream, 1, count=1))[0].seq == first


async def test_keys_get_ttl(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys, ttl=30, lease_ttl=2)
    await new_stream(log, session, stream)
    events, meta, lease = keys.stream_keys(session, stream)
    assert 29_000 < await redis.pttl(meta) <= 30_000
    assert 1_500 < await redis.pttl(lease) <= 2_000
    await log.append(session, stream, "r1", [("x", "")], pending=(1,))
    assert 29_000 < await redis.pttl(events) <= 30_000
    assert 29_000 < await redis.pttl(meta) <= 30_000
    assert 1_500 < await redis.pttl(lease) <= 2_000


async def test_stream_expires_with_ttl(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys, ttl=0.3, lease_ttl=0.2)
    await new_stream(log, session, stream)
    await log.append(session, stream, "r1", [("x", "")], pending=(1,))
    await asyncio.sleep(0.45)
    assert await log.meta(session, stream) is None
    assert await log.first_seq(session, stream) is None
    with pytest.raises(StreamVanished):
        await log.acquire(session, stream, "r2")


async def test_unreachable_store_is_store_error(keys: Keys, session: str, stream: str) -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        log = make_log(client, keys)
        with pytest.raises(errors.StoreError) as info:
            await log.meta(session, stream)
        assert info.value.status == 503
        with pytest.raises(errors.StoreError):
            await log.append(session, stream, "r1", [("x", "")], pending=())
    finally:
        await client.aclose()
