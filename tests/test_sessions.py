"""SessionStore on a real Redis: records, sliding TTL, principals, stream registry, deletion."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.store.eventlog import EventLog
from gateway.store.keys import Keys
from gateway.store.sessions import SessionRecord, SessionStore, StreamInfo, new_record
from gateway.wire import protocol
from tests.clocks import Clock


def record(principal: str = "", **overrides: object) -> SessionRecord:
    fields: dict[str, object] = dict(
        pool="default",
        instance="http://up:1/mcp",
        upstream_sid="up-123",
        protocol="2025-11-25",
        principal=principal,
        init_params={"capabilities": {}, "clientInfo": {"name": "t"}},
    )
    fields.update(overrides)
    return new_record(protocol.new_session_id(), **fields)  # type: ignore[arg-type]


async def test_create_load_roundtrip(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    rec = record(principal="alice")
    await store.create(rec)
    loaded = await store.load(rec.id, "alice")
    assert loaded == rec
    assert json.loads(loaded.init_params) == {"capabilities": {}, "clientInfo": {"name": "t"}}
    assert loaded.created > 0
    assert 0 < await redis.pttl(keys.session(rec.id)) <= 66_000  # the load renewed it: TTL x 1.1


async def test_empty_upstream_sid_and_defaults(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    rec = SessionRecord(
        id=protocol.new_session_id(), pool="p", instance="http://i", upstream_sid="", protocol="2025-03-26"
    )
    await store.create(rec)
    assert await store.load(rec.id) == rec


async def test_load_renews_ttl(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=2)
    rec = record()
    await store.create(rec)
    log = EventLog(redis, keys, maxlen=100, ttl=2)
    registration = store.registration("post", (1,))
    await log.open(rec.id, "AAAAAAAAAAAA", kind="post", pending=(1,), owner="r1", registration=registration)
    await asyncio.sleep(0.5)
    before = await redis.pttl(keys.session(rec.id))
    streams_before = await redis.pttl(keys.streams(rec.id))
    assert 0 < before <= 1600
    assert 0 < streams_before <= 1800  # registered with TTL x 1.1
    await store.load(rec.id)
    after = await redis.pttl(keys.session(rec.id))
    assert after > 2000
    assert await redis.pttl(keys.streams(rec.id)) > 2000


async def test_sliding_ttl_keeps_used_session_alive(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=0.4)
    rec = record()
    await store.create(rec)
    for _ in range(4):  # 0.8 s in total, twice the TTL
        await asyncio.sleep(0.2)
        assert (await store.load(rec.id)).id == rec.id


@pytest.mark.parametrize("bad", ["", "short", "x" * 33, "!" * 32, "a" * 31 + "}", "../" + "a" * 29])
async def test_malformed_id_is_not_found(redis: aioredis.Redis, keys: Keys, bad: str) -> None:
    store = SessionStore(redis, keys, ttl=60)
    with pytest.raises(errors.SessionNotFound) as info:
        await store.load(bad)
    assert info.value.status == 404


async def test_unknown_id_is_not_found(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    unknown = protocol.new_session_id()
    with pytest.raises(errors.SessionNotFound):
        await store.load(unknown)
    # a miss must not leave a key behind
    assert await redis.exists(keys.session(unknown)) == 0


async def test_principal_mismatch_is_not_found(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    rec = record(principal="alice")
    await store.create(rec)
    for other in ("", "bob", "alice ", "ALICE"):
        with pytest.raises(errors.SessionNotFound):
            await store.load(rec.id, other)
    assert (await store.load(rec.id, "alice")).principal == "alice"
    anonymous = record()
    await store.create(anonymous)
    with pytest.raises(errors.SessionNotFound):
        await store.load(anonymous.id, "alice")


async def test_session_expires(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=0.3)
    rec = record()
    await store.create(rec)
    assert (await store.load(rec.id)).id == rec.id
    await asyncio.sleep(0.45)
    with pytest.raises(errors.SessionNotFound):
        await store.load(rec.id)


async def test_prefixes_isolate(redis: aioredis.Redis, key_prefix: str) -> None:
    store_a = SessionStore(redis, Keys(f"{key_prefix}:a"), ttl=60)
    store_b = SessionStore(redis, Keys(f"{key_prefix}:b"), ttl=60)
    rec = record()
    await store_a.create(rec)
    with pytest.raises(errors.SessionNotFound):
        await store_b.load(rec.id)


async def test_update_upstream(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    rec = record()
    await store.create(rec)
    await store.update_upstream(rec.id, "http://other:2/mcp", "up-456")
    loaded = await store.load(rec.id)
    assert (loaded.instance, loaded.upstream_sid) == ("http://other:2/mcp", "up-456")
    assert loaded.pool == rec.pool and loaded.protocol == rec.protocol


async def test_stream_info_reads_the_registration_the_event_log_wrote(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    log = EventLog(redis, keys, maxlen=100, ttl=60)
    rec = record()
    await store.create(rec)
    for stream, kind, pending in (("AAAAAAAAAAAA", "post", (1, "two")), ("BBBBBBBBBBBB", "get", ())):
        registration = store.registration(kind, pending)
        await log.open(rec.id, stream, kind=kind, pending=pending, owner="r1", registration=registration)
    assert await store.stream_info(rec.id, "AAAAAAAAAAAA") == StreamInfo(kind="post", pending=(1, "two"))
    assert await store.stream_info(rec.id, "BBBBBBBBBBBB") == StreamInfo(kind="get", pending=())
    assert await store.stream_info(rec.id, "CCCCCCCCCCCC") is None
    assert await store.stream_info(protocol.new_session_id(), "AAAAAAAAAAAA") is None
    assert 0 < await redis.pttl(keys.streams(rec.id)) <= 66_000  # as long as a renewed record may live


async def test_delete_removes_session_and_streams(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    log = EventLog(redis, keys, maxlen=100, ttl=60)
    rec = record()
    other = record()
    await store.create(rec)
    await store.create(other)
    streams = ["AAAAAAAAAAAA", "BBBBBBBBBBBB"]
    registration = store.registration("post", (1,))
    for stream in streams:
        await log.open(rec.id, stream, kind="post", pending=(1,), owner="r1", registration=registration)
        await log.append(rec.id, stream, "r1", [("{}", "")], pending=(1,))
    await log.open(other.id, "AAAAAAAAAAAA", kind="post", pending=(1,), owner="r1", registration=registration)

    session_keys = [keys.session(rec.id), keys.streams(rec.id)]
    for stream in streams:
        session_keys.extend(keys.stream_keys(rec.id, stream))
    assert await redis.exists(*session_keys) == len(session_keys)
    pattern = f"{keys.prefix}:{{{rec.id}}}*"
    assert sorted([key async for key in redis.scan_iter(match=pattern)]) == sorted(k.encode() for k in session_keys)

    assert await store.delete(rec.id) == 2
    assert await redis.exists(*session_keys) == 0
    assert [key async for key in redis.scan_iter(match=pattern)] == []
    with pytest.raises(errors.SessionNotFound):
        await store.load(rec.id)
    # the other session is untouched
    assert (await store.load(other.id)).id == other.id
    assert await log.meta(other.id, "AAAAAAAAAAAA") is not None
    # deleting again is harmless
    assert await store.delete(rec.id) == 0


async def test_ttl_is_renewed_once_per_tenth_of_it(redis: aioredis.Redis, keys: Keys) -> None:
    """Loads within 10 % of the TTL after this replica's last renewal are one HGETALL, no PEXPIRE."""
    clock = Clock()
    store = SessionStore(redis, keys, ttl=100, clock=clock)
    rec = record()
    await store.create(rec)
    await redis.pexpire(keys.session(rec.id), 50_000)  # as if time had passed in Redis
    await store.load(rec.id)
    assert 100_000 < await redis.pttl(keys.session(rec.id)) <= 110_000  # renewed: TTL x 1.1
    await redis.pexpire(keys.session(rec.id), 50_000)
    clock.now += 9.9
    await store.load(rec.id)
    assert await redis.pttl(keys.session(rec.id)) <= 50_000  # not renewed: still fresh
    clock.now += 0.2
    await store.load(rec.id)
    assert await redis.pttl(keys.session(rec.id)) > 100_000  # renewed again past 10 s


async def test_other_replica_renews_on_its_own_schedule(redis: aioredis.Redis, keys: Keys) -> None:
    clock = Clock()
    replica_a = SessionStore(redis, keys, ttl=100, clock=clock)
    replica_b = SessionStore(redis, keys, ttl=100, clock=clock)
    rec = record()
    await replica_a.create(rec)
    await replica_a.load(rec.id)
    await redis.pexpire(keys.session(rec.id), 50_000)
    await replica_b.load(rec.id)  # B never renewed this session: it does now
    assert await redis.pttl(keys.session(rec.id)) > 100_000


async def test_skipped_renewal_still_sees_delete_and_expiry(redis: aioredis.Redis, keys: Keys) -> None:
    """The record itself is read from Redis on every load: a delete (by any replica) or an expiry is
    a 404 at once, even while this replica would not renew the TTL."""
    clock = Clock()
    replica_a = SessionStore(redis, keys, ttl=100, clock=clock)
    replica_b = SessionStore(redis, keys, ttl=100, clock=clock)
    rec = record()
    await replica_a.create(rec)
    await replica_b.load(rec.id)
    await replica_a.delete(rec.id)
    with pytest.raises(errors.SessionNotFound):
        await replica_b.load(rec.id)
    other = record()
    await replica_a.create(other)
    await replica_b.load(other.id)
    await redis.pexpire(keys.session(other.id), 1)
    await asyncio.sleep(0.01)
    with pytest.raises(errors.SessionNotFound):
        await replica_b.load(other.id)


async def test_reinitialization_on_one_replica_is_seen_by_another(redis: aioredis.Redis, keys: Keys) -> None:
    clock = Clock()
    replica_a = SessionStore(redis, keys, ttl=100, clock=clock)
    replica_b = SessionStore(redis, keys, ttl=100, clock=clock)
    rec = record()
    await replica_a.create(rec)
    assert (await replica_b.load(rec.id)).upstream_sid == "up-123"
    await replica_a.update_upstream(rec.id, "http://other:2/mcp", "up-456")
    fresh = await replica_b.load(rec.id)
    assert (fresh.instance, fresh.upstream_sid) == ("http://other:2/mcp", "up-456")


def test_a_record_read_back_from_its_hash_is_the_record_the_dataclass_builds() -> None:
    full = SessionRecord("s" * 32, "p", "http://u/mcp", "up", "2025-11-25", "alice", '{"a":1}', 12.5)
    minimal = {b"pool": b"p", b"instance": b"http://u/mcp", b"protocol": b"2025-06-18"}
    for record, raw in (
        (full, {k.encode(): v.encode() for k, v in full.to_redis().items()}),
        (SessionRecord("t" * 32, "p", "http://u/mcp", "", "2025-06-18"), minimal),  # the defaults
    ):
        read = SessionRecord.from_redis(record.id, raw)
        assert read == record and repr(read) == repr(record)
        with pytest.raises(AttributeError):  # still frozen
            read.pool = "other"  # type: ignore[misc]


def test_record_fields_are_the_hash_fields_in_the_order_the_claim_script_reads_them() -> None:
    import re

    from gateway.store import claims
    from gateway.store.sessions import RECORD_FIELDS

    assert [f.decode() for f in RECORD_FIELDS] == [f for f in SessionRecord.__dataclass_fields__ if f != "id"]
    hmget = re.search(r"HMGET', KEYS\[1\],(.*?)\)", claims._LOAD_AND_CLAIM, re.S)
    assert hmget is not None
    assert re.findall(r"'([a-z_]+)'", hmget.group(1)) == [f.decode() for f in RECORD_FIELDS]
    absent = SessionRecord.from_values("t" * 32, [b"p", b"http://u/mcp", None, b"2025-06-18", None, None, None])
    assert absent == SessionRecord("t" * 32, "p", "http://u/mcp", "", "2025-06-18")  # the defaults
    with pytest.raises(KeyError):
        SessionRecord.from_values("t" * 32, [b"p", None, None, b"2025-06-18", None, None, None])
