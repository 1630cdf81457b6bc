"""EventLog on a real Redis (and a few mirrored on fakeredis): appends, fencing, leases, reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import fakeredis
import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.store.eventlog import (
    DONE,
    END,
    HELD,
    MESSAGE,
    RELEASED,
    TAKEN,
    VANISHED,
    Acquired,
    EventLog,
    LeaseLost,
    Meta,
    StreamVanished,
    appended,
)
from gateway.store.keys import Keys
from gateway.store.sessions import SessionStore, StreamInfo
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
) -> EventLog:
    return EventLog(client, keys, maxlen=maxlen, ttl=ttl)


async def new_stream(
    log: EventLog, session: str, stream: str, owner: str = "r1", pending: tuple[object, ...] = (1,)
) -> None:
    await log.open(session, stream, kind="post", pending=pending, owner=owner)


# --- create / append (both backends) ------------------------------------------------------------


async def test_create_and_append(any_redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(any_redis, keys)
    await log.open(session, stream, kind="post", pending=(1, "b"), owner="r1")
    assert await log.meta(session, stream) == Meta(kind="post", seq=0, pending=(1, "b"), uid="", done=False)
    assert await log.lease_holder(session, stream) == "r1"
    assert await log.first_seq(session, stream) is None

    assert await log.append(session, stream, "r1", [("a", "u1"), ("b", ""), ("c", "u3")], pending=("b",), uid="u3") == 3
    assert await log.append(session, stream, "r1", [("d", "")], pending=("b",)) == 4
    rows = await any_redis.xrange(keys.events(session, stream))
    assert rows is not None
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


async def test_open_with_events_is_create_then_append_in_one_script(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    """The stream's first events (and, when they answered everything, its end) with its creation."""
    log = make_log(any_redis, keys)
    seq = await log.open(session, stream, kind="post", pending=("b",), owner="r1", events=[("a", "u1"), ("b", "")])
    assert seq == 2
    assert await log.meta(session, stream) == Meta(kind="post", seq=2, pending=("b",), uid="", done=False)
    assert await log.lease_holder(session, stream) == "r1"
    # appends follow, fenced as usual
    assert await log.append(session, stream, "r1", [("c", "u3")], pending=(), uid="u3", expect=2) == 3

    other = cursor.new_stream_id()
    seq = await log.open(
        session, other, kind="post", pending=(), owner="r1", events=[("x", "u9")], uid="u9", final=True
    )
    assert seq == 2  # the event and the end marker
    assert [(e.seq, e.type, e.data) for e in await log.read(session, other, 0)] == [(1, MESSAGE, "x"), (2, END, "")]
    assert await log.meta(session, other) == Meta(kind="post", seq=2, pending=(), uid="u9", done=True)
    assert await log.lease_holder(session, other) is None  # done: nobody pumps it


async def test_create_keeps_the_trace_context(any_redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    """A traced stream keeps the opening request's traceparent (takeovers and resumes continue it);
    an untraced one writes no field for it."""
    log = make_log(any_redis, keys)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await log.open(session, stream, kind="post", pending=(1,), owner="r1", trace=traceparent)
    await log.append(session, stream, "r1", [("a", "u1")], pending=(1,), uid="u1")
    meta = await log.meta(session, stream)
    assert meta is not None and meta.trace == traceparent
    other = cursor.new_stream_id()
    await log.open(session, other, kind="post", pending=(1,), owner="r1")
    assert not await any_redis.hexists(keys.meta(session, other), "tp")
    untraced = await log.meta(session, other)
    assert untraced is not None and untraced.trace == ""


async def test_open_keeps_the_progress_tokens_of_a_post_stream(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    """Whoever re-opens the stream upstream (a takeover) relays progress for these tokens only; a
    GET stream has none, and a POST stream opened without them (an older replica) reads None."""
    log = make_log(any_redis, keys)
    await log.open(session, stream, kind="post", pending=(1, 2), owner="r1", tokens=("p1", 2), events=[("a", "u1")])
    meta = await log.meta(session, stream)
    assert meta is not None and meta.tokens == ("p1", 2) and meta.seq == 1 and meta.uid == ""
    assert [e.data for e in await log.read(session, stream, 0)] == ["a"]
    get, older = cursor.new_stream_id(), cursor.new_stream_id()
    await log.open(session, get, kind="get", pending=(), owner="r1")
    await log.open(session, older, kind="post", pending=(1,), owner="r1")
    assert not await any_redis.hexists(keys.meta(session, get), "pt")
    get_meta, older_meta = await log.meta(session, get), await log.meta(session, older)
    assert get_meta is not None and get_meta.tokens == ()
    assert older_meta is not None and older_meta.tokens is None


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
    assert await log.acquire(session, stream, "r2", None) == Acquired(DONE, "")
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
    assert (await log.acquire(session, stream, "r1", "r1")).code == VANISHED
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
    assert (await log.acquire(session, stream, "r2", "r1")).code == VANISHED
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
    assert (await log.acquire(session, stream, "r1", "r1")).code == VANISHED
    assert await flushable.exists(*keys.stream_keys(session, stream)) == 0
    assert await log.meta(session, stream) is None
    assert cursor.decide(1, meta_seq=None, first_retained=await log.first_seq(session, stream)) == cursor.Gap(
        "the stream's state was lost (store restarted or expired)"
    )


async def test_acquire_is_compare_and_set_and_fences_the_old_owner(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    # Only a caller that saw the current holder dead may take it: a stale view changes nothing.
    assert await log.acquire(session, stream, "r2", "someone-else") == Acquired(HELD, "r1")
    assert await log.acquire(session, stream, "r2", None) == Acquired(HELD, "r1")
    assert await log.lease_holder(session, stream) == "r1"
    assert await log.acquire(session, stream, "r2", "r1") == Acquired(TAKEN, "r2")
    # the old owner (paused, then awake) is fenced from the next write on
    with pytest.raises(LeaseLost):
        await log.append(session, stream, "r1", [("stale", "")], pending=(1,))
    assert await log.append(session, stream, "r2", [("fresh", "")], pending=(1,), expect=0) == 1
    assert [e.data for e in await log.read(session, stream, 0)] == ["fresh"]
    assert await log.release(session, stream, "r1") is False  # a stale owner cannot release either
    assert await log.lease_holder(session, stream) == "r2"


async def test_no_double_pump(redis: aioredis.Redis, redis_url: str, keys: Keys, session: str) -> None:
    log = make_log(redis, keys)
    streams = [cursor.new_stream_id() for _ in range(20)]
    for stream in streams:
        await new_stream(log, session, stream, owner="dead")
    others = [aioredis.from_url(redis_url) for _ in range(3)]
    try:
        logs = [log, *(make_log(client, keys) for client in others)]
        for stream in streams:
            # every replica saw "dead" dead at the same moment: exactly one wins
            attempts = (lg.acquire(session, stream, f"r{i}", "dead") for i, lg in enumerate(logs))
            results = await asyncio.gather(*attempts)
            assert sum(r.code == TAKEN for r in results) == 1, results
            winner = next(r.holder for r in results if r.code == TAKEN)
            assert {r.holder for r in results} == {winner}  # the losers learn who won
            assert await log.lease_holder(session, stream) == winner
    finally:
        for client in others:
            await client.aclose()


async def test_append_checks_the_expected_seq(any_redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    """A log that is not where its pump left it (a failover lost writes) is a gap, not a renumbering."""
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    assert await log.append(session, stream, "r1", [("a", ""), ("b", "")], pending=(1,), expect=0) == 2
    await any_redis.hset(keys.meta(session, stream), "seq", "1")  # as if the last write was lost
    with pytest.raises(StreamVanished):
        await log.append(session, stream, "r1", [("c", "")], pending=(1,), expect=2)
    assert [e.seq for e in await log.read(session, stream, 0)] == [1, 2]  # nothing written


async def test_appends_and_releases_are_announced(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    pubsub = any_redis.pubsub()
    await pubsub.ssubscribe(keys.notify(session, stream))
    assert (await pubsub.get_message(timeout=1.0))["type"] in (b"ssubscribe", "ssubscribe")
    try:
        await log.append(session, stream, "r1", [("a", ""), ("b", "")], pending=(1,))
        await log.release(session, stream, "r1")
        got = [await pubsub.get_message(timeout=1.0) for _ in range(2)]
        assert [m["data"] for m in got if m] == [b"2", RELEASED]
        assert await log.lease_holder(session, stream) is None
        # a released, unfinished stream may be adopted by whoever saw nobody holding it
        assert await log.acquire(session, stream, "r2", None) == Acquired(TAKEN, "r2")
    finally:
        await pubsub.aclose()


async def test_silent_log_publishes_nothing(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = EventLog(redis, keys, maxlen=100, ttl=60, notify=False)
    await new_stream(log, session, stream)
    pubsub = redis.pubsub()
    await pubsub.ssubscribe(keys.notify(session, stream))
    await pubsub.get_message(timeout=1.0)
    try:
        await log.append(session, stream, "r1", [("a", "")], pending=(1,))
        assert await pubsub.get_message(timeout=0.3) is None
    finally:
        await pubsub.aclose()


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
    log = make_log(redis, keys, ttl=30)
    await new_stream(log, session, stream)
    events, meta, lease = keys.stream_keys(session, stream)
    assert 29_000 < await redis.pttl(meta) <= 30_000
    assert 29_000 < await redis.pttl(lease) <= 30_000  # the lease lives as long as its stream
    await log.append(session, stream, "r1", [("x", "")], pending=(1,))
    assert 29_000 < await redis.pttl(events) <= 30_000
    assert 29_000 < await redis.pttl(meta) <= 30_000
    assert 29_000 < await redis.pttl(lease) <= 30_000


async def test_stream_expires_with_ttl(redis: aioredis.Redis, keys: Keys, session: str, stream: str) -> None:
    log = make_log(redis, keys, ttl=0.3)
    await new_stream(log, session, stream)
    await log.append(session, stream, "r1", [("x", "")], pending=(1,))
    await asyncio.sleep(0.45)
    assert await log.meta(session, stream) is None
    assert await log.first_seq(session, stream) is None
    assert (await log.acquire(session, stream, "r2", None)).code == VANISHED


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


@pytest.mark.parametrize(
    ("events", "final", "poll_ms"),
    [([("a", "u1"), ("b", "")], False, None), ([("c", "u2")], True, None), ([], False, 250), ([], True, None)],
)
async def test_appended_is_what_the_script_wrote(
    any_redis: aioredis.Redis,
    keys: Keys,
    session: str,
    stream: str,
    events: list[tuple[str, str]],
    final: bool,
    poll_ms: int | None,
) -> None:
    """The pump hands its local deliveries `appended(...)` instead of reading the entries back."""
    log = make_log(any_redis, keys)
    await new_stream(log, session, stream)
    assert await log.append(session, stream, "r1", [("x", "u0")], pending=(1,), expect=0) == 1
    seq = await log.append(session, stream, "r1", events, pending=(1,), final=final, poll_ms=poll_ms, expect=1)
    written = appended(1, events, final=final, poll_ms=poll_ms)
    assert written == await log.read(session, stream, 1)
    assert written[-1].seq == seq


async def test_create_writes_the_streams_registration_in_the_same_script(redis: aioredis.Redis, keys: Keys) -> None:
    """The stream's entry in its session's registry goes with its meta and lease (one EVALSHA)."""
    store = SessionStore(redis, keys, ttl=60)
    log = EventLog(redis, keys, maxlen=100, ttl=60)
    session = protocol.new_session_id()
    await log.open(session, "S1", kind="get", pending=(), owner="r1")
    assert await redis.exists(keys.streams(session)) == 0  # without a registration: meta and lease only
    await log.open(session, "S2", kind="post", pending=(3,), owner="r1", registration=store.registration("post", (3,)))
    assert await store.stream_info(session, "S2") == StreamInfo(kind="post", pending=(3,))
    assert 60_000 < await redis.pttl(keys.streams(session)) <= 66_000  # as long as a renewed record may live
    assert await log.lease_holder(session, "S2") == "r1"


async def test_an_ended_stream_keeps_its_keys_for_the_retention_only(
    any_redis: aioredis.Redis, keys: Keys, session: str, stream: str
) -> None:
    """Issue 35: a finished call's log is kept for the resumption window, not the session's TTL."""
    log = EventLog(any_redis, keys, maxlen=100, ttl=600, retention=5)
    await log.open(session, stream, kind="post", pending=(1,), owner="r1")
    await log.append(session, stream, "r1", [("a", "u1")], pending=(1,))
    assert await any_redis.pttl(keys.events(session, stream)) > 5000  # live: the session's TTL
    await log.append(session, stream, "r1", [("b", "u2")], pending=(), final=True)
    other = cursor.new_stream_id()  # ended by its very first write
    await log.open(session, other, kind="post", pending=(), owner="r1", events=[("c", "")], final=True)
    for name in (stream, other):
        for key in (keys.events(session, name), keys.meta(session, name)):
            assert 0 < await any_redis.pttl(key) <= 5000, key
