"""GCRA quota buckets on a real Redis: burst, refusal with the time to wait, one bucket per key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store.client import Redis, connect
from gateway.store.keys import Keys
from gateway.store.quotas import Quotas, rule_id


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, max_connections=4, cluster=False, sentinels=(), sentinel_master="m", client_name="t")
    try:
        yield client
    finally:
        await client.aclose()


async def test_burst_passes_then_refused_with_retry_after(store: Redis, key_prefix: str) -> None:
    quotas = Quotas(store, Keys(key_prefix))
    taken = [await quotas.take("r1", "alice", per_second=1 / 60, burst=5) for _ in range(8)]
    assert [t.admitted for t in taken] == [True] * 5 + [False] * 3
    assert 55 <= taken[-1].retry_after <= 60
    assert taken[-1].retry_after_header == "60"
    # another key, another budget
    assert (await quotas.take("r1", "bob", per_second=1 / 60, burst=5)).admitted
    assert (await quotas.take("r2", "alice", per_second=1 / 60, burst=1)).admitted


async def test_buckets_are_shared_by_every_client_of_the_store(store: Redis, redis_url: str, key_prefix: str) -> None:
    other = connect(redis_url, max_connections=2, cluster=False, sentinels=(), sentinel_master="m", client_name="u")
    try:
        a, b = Quotas(store, Keys(key_prefix)), Quotas(other, Keys(key_prefix))
        admitted = [await (a if i % 2 else b).take("r", "k", per_second=1 / 3600, burst=3) for i in range(9)]
        assert sum(t.admitted for t in admitted) == 3
    finally:
        await other.aclose()


def test_rule_id_changes_with_the_rule() -> None:
    assert rule_id("a") != rule_id("b") and rule_id("a") == rule_id("a")
