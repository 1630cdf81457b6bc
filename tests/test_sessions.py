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
    assert 0 < await redis.pttl(keys.session(rec.id)) <= 60_000


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
    await store.register_stream(rec.id, "AAAAAAAAAAAA", "post", (1,))
    await asyncio.sleep(0.5)
    before = await redis.pttl(keys.session(rec.id))
    streams_before = await redis.pttl(keys.streams(rec.id))
    assert 0 < before <= 1600
    assert 0 < streams_before <= 1600
    await store.load(rec.id)
    after = await redis.pttl(keys.session(rec.id))
    assert after > 1800
    assert await redis.pttl(keys.streams(rec.id)) > 1800


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


async def test_register_stream_and_stream_info(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    rec = record()
    await store.create(rec)
    await store.register_stream(rec.id, "AAAAAAAAAAAA", "post", (1, "two"))
    await store.register_stream(rec.id, "BBBBBBBBBBBB", "get", ())
    assert await store.stream_info(rec.id, "AAAAAAAAAAAA") == StreamInfo(kind="post", pending=(1, "two"))
    assert await store.stream_info(rec.id, "BBBBBBBBBBBB") == StreamInfo(kind="get", pending=())
    assert await store.stream_info(rec.id, "CCCCCCCCCCCC") is None
    assert await store.stream_info(protocol.new_session_id(), "AAAAAAAAAAAA") is None
    assert 0 < await redis.pttl(keys.streams(rec.id)) <= 60_000


async def test_delete_removes_session_and_streams(redis: aioredis.Redis, keys: Keys) -> None:
    store = SessionStore(redis, keys, ttl=60)
    log = EventLog(redis, keys, maxlen=100, ttl=60)
    rec = record()
    other = record()
    await store.create(rec)
    await store.create(other)
    streams = ["AAAAAAAAAAAA", "BBBBBBBBBBBB"]
    for stream in streams:
        await store.register_stream(rec.id, stream, "post", (1,))
        await log.create(rec.id, stream, kind="post", pending=(1,), owner="r1")
        await log.append(rec.id, stream, "r1", [("{}", "")], pending=(1,))
    await store.register_stream(other.id, "AAAAAAAAAAAA", "post", (1,))
    await log.create(other.id, "AAAAAAAAAAAA", kind="post", pending=(1,), owner="r1")

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
