"""ResponseCache (gateway/caching/service.py) on fakeredis: what is kept and for whom, SSE answers
kept as they pass (bytes unchanged), listen streams invalidating, and a store failure as a miss."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import fakeredis

from gateway import errors
from gateway.caching.service import ResponseCache
from gateway.metrics import Metrics
from gateway.store.keys import Keys
from gateway.store.responses import ResponseStore
from gateway.wire import caching

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}


def cache_on(
    redis: fakeredis.FakeAsyncRedis, *, max_bytes: int = 1 << 16
) -> tuple[ResponseCache, Metrics, list[tuple[str, str | None]]]:
    metrics = Metrics()
    used: list[tuple[str, str | None]] = []
    store = ResponseStore(redis, Keys("t"), max_ttl_ms=86_400_000)
    cache = ResponseCache(
        store, metrics, max_bytes=max_bytes, max_line=1 << 16, in_use=lambda pool, uri: used.append((pool, uri))
    )
    return cache, metrics, used


def answer(result: dict[str, Any], rid: Any = 1) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}).encode()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_public_answers_are_kept_for_everyone(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    cache, metrics, used = cache_on(fake_redis)
    hit, pending = await cache.lookup("default", "tools/list", {"_meta": META}, None)
    assert hit is None and pending is not None
    await cache.offer_json(pending, answer({"tools": [], "ttlMs": 5000, "cacheScope": "public"}), 1)
    for who in (None, "p:alice"):
        hit, pending = await cache.lookup("default", "tools/list", {"_meta": META}, who)
        assert hit is not None and pending is None and hit.result["tools"] == []
    assert sample(metrics, "mcpgw_response_cache_stores_total", method="tools/list") == 1
    assert sample(metrics, "mcpgw_response_cache_hits_total", method="tools/list") == 2
    assert sample(metrics, "mcpgw_response_cache_misses_total", method="tools/list") == 1
    assert used == [("default", None)] * 3  # the watch hears of every use


async def test_private_answers_only_for_their_partition(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    cache, _, _ = cache_on(fake_redis)
    params = {"uri": "private:///me"}
    _, anonymous = await cache.lookup("default", "resources/read", params, None)
    assert anonymous is not None
    await cache.offer_json(anonymous, answer({"contents": [], "ttlMs": 5000, "cacheScope": "private"}), 1)
    assert (await cache.lookup("default", "resources/read", params, None))[0] is None  # not kept for nobody
    _, alice = await cache.lookup("default", "resources/read", params, "p:alice")
    assert alice is not None
    await cache.offer_json(alice, answer({"contents": ["a"], "ttlMs": 5000}), 1)  # no scope: private
    hit, _ = await cache.lookup("default", "resources/read", params, "p:alice")
    assert hit is not None and hit.result["contents"] == ["a"]
    assert (await cache.lookup("default", "resources/read", params, "p:bob"))[0] is None
    assert (await cache.lookup("default", "resources/read", params, None))[0] is None


async def test_what_is_never_kept(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    cache, metrics, _ = cache_on(fake_redis, max_bytes=100)
    assert await cache.lookup("default", "tools/call", {"name": "x"}, None) == (None, None)
    _, pending = await cache.lookup("default", "tools/list", {}, None)
    assert pending is not None
    await cache.offer_json(pending, answer({"tools": ["x" * 200], "ttlMs": 5000, "cacheScope": "public"}), 1)
    await cache.offer_json(pending, answer({"tools": [], "ttlMs": 0, "cacheScope": "public"}), 1)
    await cache.offer_json(pending, answer({"tools": [], "ttlMs": 5000, "cacheScope": "public"}, rid=2), 1)
    await cache.offer_json(pending, b"not json", 1)
    assert sample(metrics, "mcpgw_response_cache_stores_total", method="tools/list") == 0


async def test_an_sse_answer_is_kept_as_it_passes(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    cache, _, _ = cache_on(fake_redis)
    _, pending = await cache.lookup("default", "prompts/list", {}, None)
    assert pending is not None
    log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}
    body = f"data: {json.dumps(log)}\n\nevent: message\ndata: ".encode()
    body += answer({"prompts": [], "ttlMs": 5000, "cacheScope": "public"}) + b"\n\n"

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):  # events split anywhere
            yield body[i : i + 7]

    relayed = b"".join([chunk async for chunk in cache.offer_stream(pending, chunks(), 1)])
    assert relayed == body
    hit, _ = await cache.lookup("default", "prompts/list", {}, None)
    assert hit is not None and hit.result["prompts"] == []


async def test_a_listen_stream_invalidates_as_it_passes(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    cache, metrics, _ = cache_on(fake_redis)
    _, pending = await cache.lookup("default", "tools/list", {}, None)
    assert pending is not None
    await cache.offer_json(pending, answer({"tools": [], "ttlMs": 5000, "cacheScope": "public"}), 1)
    note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {}}
    body = f"data: {json.dumps(note)}\n\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    assert [c async for c in cache.watch_stream("default", chunks())] == [body]
    assert (await cache.lookup("default", "tools/list", {}, None))[0] is None
    changed = "notifications/tools/list_changed"
    assert sample(metrics, "mcpgw_response_cache_invalidations_total", notification=changed) == 1


class BrokenStore(ResponseStore):
    async def lookup(self, pool: str, family: str, digests: Any) -> Any:
        raise errors.StoreError("down")


async def test_a_store_failure_is_a_miss_that_keeps_nothing(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    metrics = Metrics()
    cache = ResponseCache(BrokenStore(fake_redis, Keys("t"), max_ttl_ms=1000), metrics, max_bytes=1000, max_line=1000)
    assert await cache.lookup("default", "tools/list", {}, None) == (None, None)  # served from upstream
    assert sample(metrics, "mcpgw_store_errors_total") == 1


async def test_a_refresh_skips_the_entry_and_keeps_the_fresh_answer(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    cache, _, _ = cache_on(fake_redis)
    _, pending = await cache.lookup("default", "tools/list", {}, None)
    assert pending is not None
    await cache.offer_json(pending, answer({"tools": ["old"], "ttlMs": 5000, "cacheScope": "public"}), 1)
    hit, refresh = await cache.lookup("default", "tools/list", {}, None, caching.Directives(use_stored=False))
    assert hit is None and refresh is not None  # Cache-Control: no-cache goes upstream
    await cache.offer_json(refresh, answer({"tools": ["new"], "ttlMs": 5000, "cacheScope": "public"}), 1)
    hit, _ = await cache.lookup("default", "tools/list", {}, None)
    assert hit is not None and hit.result["tools"] == ["new"]
    hit, keep = await cache.lookup("default", "tools/list", {}, None, caching.Directives(may_store=False))
    assert hit is not None and keep is None  # no-store may still be served what is there
    _, keep = await cache.lookup("default", "prompts/list", {}, None, caching.Directives(may_store=False))
    assert keep is None  # ... but keeps nothing
    both = caching.Directives(use_stored=False, may_store=False)
    assert await cache.lookup("default", "tools/list", {}, None, both) == (None, None)
