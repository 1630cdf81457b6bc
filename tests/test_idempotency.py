"""IdempotencyStore on a real Redis and the Idempotency-Key header rules (parse, per-state answers)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.replay.idempotent import parse_key
from gateway.store.idempotency import DONE, RUNNING, IdempotencyStore, Outcome, record_digest
from gateway.store.keys import Keys


@pytest.mark.parametrize(("value", "key"), [('"abc"', "abc"), ("abc", "abc"), ('"a\\"b"', 'a"b'), (' "x y" ', "x y")])
def test_parse_key(value: str, key: str) -> None:
    assert parse_key(value) == key


@pytest.mark.parametrize("value", ['""', "", "x" * 256, '"caf\u00e9"', "a\tb"])
def test_bad_keys_are_400(value: str) -> None:
    with pytest.raises(errors.InvalidRequest):
        parse_key(value)


def test_digest_is_per_principal() -> None:
    assert record_digest("alice", "k") != record_digest("bob", "k")
    assert record_digest("a", "b\0c") != record_digest("a\0b", "c")


async def test_begin_once_then_finish(redis: aioredis.Redis, keys: Keys) -> None:
    store = IdempotencyStore(redis, keys, ttl=30)
    assert await store.begin("d1", "fp") is None
    running = await store.begin("d1", "fp")
    assert running is not None and running.state == RUNNING and running.fingerprint == "fp"
    await store.finish("d1", Outcome(status=201, content_type="application/json", body=b'{"a": 1}'))
    done = await store.begin("d1", "other")
    assert done is not None and (done.state, done.status, done.body, done.fingerprint) == (DONE, 201, b'{"a": 1}', "fp")
    assert 0 < await redis.pttl(keys.idempotency("d1")) <= 30_000


async def test_finish_after_expiry_writes_nothing(redis: aioredis.Redis, keys: Keys) -> None:
    store = IdempotencyStore(redis, keys, ttl=30)
    await store.finish("gone", Outcome(status=200))
    assert await redis.exists(keys.idempotency("gone")) == 0
    await store.begin("d2", "fp")
    await store.forget("d2")
    assert await store.begin("d2", "fp") is None
