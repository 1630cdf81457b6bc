"""The cache watch (gateway/caching/watcher.py) against an in-process upstream and a real Redis:
notifications bump their family, a re-opened stream bumps the lists, an instance without
`subscriptions/listen` is left alone, and a watch starts once per pool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway import errors
from gateway.caching.service import ResponseCache
from gateway.caching.watcher import NotListening, Watcher
from gateway.config.specs import Pool
from gateway.metrics import Metrics
from gateway.store.keys import Keys
from gateway.store.responses import ResponseStore
from gateway.supervisor import Supervisor
from gateway.upstream.client import HeaderPolicy, UpstreamClient, new_upstream_pool
from gateway.upstream.pools import Pools
from gateway.wire.caching import family_of_read
from tests.asgi_server import serve

ACK = {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {"notifications": {}}}


def upstream(messages: list[dict[str, Any]], *, listens: bool = True) -> Starlette:
    seen: list[dict[str, Any]] = []

    async def mcp(request: Request) -> Response:
        body = json.loads(await request.body())
        seen.append({"body": body, "method_header": request.headers.get("mcp-method")})
        if not listens:
            return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32601, "message": "no"}})

        async def events() -> AsyncIterator[bytes]:
            for message in messages:
                yield f"data: {json.dumps(message)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/mcp", mcp, methods=["POST"])])
    app.state.seen = seen
    return app


async def bumped(redis: aioredis.Redis, keys: Keys, family: str) -> bool:
    """The family got a generation (from nothing: no entries here, so only a bump makes one)."""
    return bool(await redis.exists(keys.cache_generation("default", family)))


async def watcher_for(url: str, redis: aioredis.Redis, keys: Keys, supervisor: Supervisor) -> tuple[Watcher, Any]:
    metrics = Metrics()
    cache = ResponseCache(ResponseStore(redis, keys, max_ttl_ms=60_000), metrics, max_bytes=1 << 16, max_line=1 << 16)
    http = new_upstream_pool(connect_timeout=2, pool_size=4)
    client = UpstreamClient(http, request_timeout=5, latency=metrics.upstream_latency)
    pools = Pools((Pool("default", (url,)),))
    watcher = Watcher(
        pools=pools, upstream=client, headers=HeaderPolicy(), cache=cache, supervisor=supervisor, max_line=1 << 16
    )
    return watcher, metrics


async def test_notifications_bump_their_families(redis: aioredis.Redis, keys: Keys) -> None:
    tools = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    updated = {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "file:///a"}}
    app = upstream([ACK, tools, updated, {"jsonrpc": "2.0", "method": "notifications/message", "params": {}}])
    supervisor = Supervisor()
    async with serve(app) as url:
        watcher, metrics = await watcher_for(f"{url}/mcp", redis, keys, supervisor)
        assert await watcher.listen_once("default", f"{url}/mcp") is True  # acknowledged, then ended
    request = app.state.seen[0]
    assert request["method_header"] == "subscriptions/listen"
    assert request["body"]["params"]["notifications"] == {
        "toolsListChanged": True,
        "promptsListChanged": True,
        "resourcesListChanged": True,
    }
    assert await bumped(redis, keys, "tools")
    assert not await bumped(redis, keys, "prompts")  # a first stream does not bump the lists
    assert await bumped(redis, keys, family_of_read("file:///a"))
    text = metrics.render().decode()
    assert 'mcpgw_response_cache_invalidations_total{notification="notifications/tools/list_changed"} 1.0' in text
    await supervisor.aclose()


async def test_a_reopened_stream_bumps_every_list(redis: aioredis.Redis, keys: Keys) -> None:
    supervisor = Supervisor()
    async with serve(upstream([ACK])) as url:
        watcher, _ = await watcher_for(f"{url}/mcp", redis, keys, supervisor)
        assert await watcher.listen_once("default", f"{url}/mcp", reopened=True)
    for family in ("tools", "prompts", "resources"):
        assert await bumped(redis, keys, family)  # changes while nobody listened are not lost
    await supervisor.aclose()


async def test_an_instance_without_listen_is_left_alone(redis: aioredis.Redis, keys: Keys) -> None:
    supervisor = Supervisor()
    app = upstream([], listens=False)
    async with serve(app) as url:
        watcher, _ = await watcher_for(f"{url}/mcp", redis, keys, supervisor)
        with pytest.raises(NotListening):
            await watcher.listen_once("default", f"{url}/mcp")
        watcher.watch("default")
        watcher.watch("default")  # once per pool
        for _ in range(250):  # polls until the watch task ended by itself (no timing asserted)
            if not len(supervisor):
                break
            await asyncio.sleep(0.02)
        assert len(supervisor) == 0
        assert len(app.state.seen) == 2  # the direct call and one watch: no retry loop
    await supervisor.aclose()


async def test_no_watch_starts_after_shutdown(redis: aioredis.Redis, keys: Keys) -> None:
    supervisor = Supervisor()
    watcher, _ = await watcher_for("http://127.0.0.1:9/mcp", redis, keys, supervisor)
    await supervisor.aclose()
    watcher.watch("default")  # a request served during the drain: no error, no task
    assert len(supervisor) == 0


async def test_a_failing_instance_is_asked_again_later(redis: aioredis.Redis, keys: Keys) -> None:
    async def busy(request: Request) -> Response:
        return Response("busy", status_code=503)

    supervisor = Supervisor()
    async with serve(Starlette(routes=[Route("/mcp", busy, methods=["POST"])])) as url:
        watcher, _ = await watcher_for(f"{url}/mcp", redis, keys, supervisor)
        with pytest.raises(errors.UpstreamError) as raised:
            await watcher.listen_once("default", f"{url}/mcp")
        assert not isinstance(raised.value, NotListening)  # a 5xx is not "no listen here": retried
    await supervisor.aclose()


def holding_upstream() -> Starlette:
    """Acknowledges every listen stream and keeps it open; records filters and open streams."""
    state: dict[str, Any] = {"filters": [], "open": 0}

    async def mcp(request: Request) -> Response:
        body = json.loads(await request.body())
        state["filters"].append(body["params"]["notifications"])

        async def events() -> AsyncIterator[bytes]:
            state["open"] += 1
            try:
                yield f"data: {json.dumps(ACK)}\n\n".encode()
                while True:
                    await asyncio.sleep(3600)
                    yield b": keep-alive\n\n"
            finally:
                state["open"] -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/mcp", mcp, methods=["POST"])])
    app.state.watch = state
    return app


async def until(check: Any) -> bool:
    for _ in range(250):  # polls (no timing asserted)
        if check():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_new_uri_replaces_the_stream_after_its_acknowledgment(redis: aioredis.Redis, keys: Keys) -> None:
    supervisor = Supervisor()
    app = holding_upstream()
    state = app.state.watch
    async with serve(app) as url:
        watcher, _ = await watcher_for(f"{url}/mcp", redis, keys, supervisor)
        watcher.watch("default", "file:///a")
        assert await until(lambda: state["open"] == 1)
        watcher.watch("default", "file:///a")  # known: nothing new
        watcher.watch("default", "file:///b")
        assert await until(lambda: len(state["filters"]) == 2 and state["open"] == 1), state
        assert state["filters"][0]["resourceSubscriptions"] == ["file:///a"]
        assert state["filters"][1]["resourceSubscriptions"] == ["file:///a", "file:///b"]
        assert state["filters"][1]["toolsListChanged"] is True
        # a replacement is not a gap: nothing was bumped
        assert not await bumped(redis, keys, "tools")
        assert not await bumped(redis, keys, family_of_read("file:///a"))
        await supervisor.aclose()
        assert await until(lambda: state["open"] == 0)  # shutdown closes the stream


async def test_a_stream_reopened_after_a_gap_bumps_lists_and_watched_reads(redis: aioredis.Redis, keys: Keys) -> None:
    supervisor = Supervisor()
    async with serve(upstream([ACK])) as url:  # acknowledges, then ends the stream each time
        watcher, _ = await watcher_for(f"{url}/mcp", redis, keys, supervisor)
        watcher.watch("default", "file:///a")
        families = ("tools", "prompts", "resources", family_of_read("file:///a"))

        async def all_bumped() -> bool:
            return all([await bumped(redis, keys, family) for family in families])

        for _ in range(250):  # polls until the second stream (0.5 s later) was acknowledged
            if await all_bumped():
                break
            await asyncio.sleep(0.02)
        assert await all_bumped()
        await supervisor.aclose()


async def test_no_watch_starts_after_shutdown_and_new_uris_are_harmless(redis: aioredis.Redis, keys: Keys) -> None:
    supervisor = Supervisor()
    watcher, _ = await watcher_for("http://127.0.0.1:9/mcp", redis, keys, supervisor)
    await supervisor.aclose()
    watcher.watch("default", "file:///a")
    watcher.watch("default", "file:///b")  # a filter change with no watch running
    assert len(supervisor) == 0
