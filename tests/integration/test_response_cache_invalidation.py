"""The response cache's invalidation through real replicas: list changes heard by the replicas' own
watch streams, `resources/updated` for the reads they cached and on a client's listen stream, a
Python SDK 2.3.0 upstream's own hints and notifications, and a real Redis Cluster. Helpers and the
counting upstream come from `test_response_cache.py`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.integration.conftest import StartGateways
from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port
from tests.integration.redis_topologies import LocalCluster
from tests.integration.test_response_cache import (
    META,
    Upstream,
    headers,
    metric,
    replicas,
    result,
    rpc,
    start_upstream,
    watched,
)
from tests.integration.test_tasks import eventually


async def test_list_changes_invalidate_on_every_replica(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    assert await upstream.listeners() == 0  # a replica watches a pool once it uses its entries
    for kind, method, field in (("tools", "tools/list", "tools"), ("prompts", "prompts/list", "prompts")):
        assert result(await rpc(a.url, method))[field][0]["name"].endswith("-v0")
        assert result(await rpc(b.url, method))[field][0]["name"].endswith("-v0")
        assert await upstream.count(method) == 1
        await watched(upstream, 2)  # each replica's own listen stream, with nobody else listening
        await upstream.change(kind)

        async def changed(method: str = method, field: str = field) -> bool:
            return bool(result(await rpc(b.url, method))[field][0]["name"].endswith("-v1"))

        assert await eventually(changed), f"{method} stayed cached after its list_changed"
        assert await upstream.count(method) == 2  # refetched once, then cached again
        assert result(await rpc(a.url, method))[field][0]["name"].endswith("-v1")
        assert await upstream.count(method) == 2
        assert await metric(a, "mcpgw_response_cache_invalidations_total", f"notifications/{kind}/list_changed") >= 1


@asynccontextmanager
async def client_listening(url: str, uris: list[str]) -> AsyncIterator[None]:
    """A client's own `subscriptions/listen` stream through the gateway, open for the block."""
    params = {"_meta": META, "notifications": {"resourceSubscriptions": uris}}
    body = {"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen", "params": params}
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("POST", url, json=body, headers=headers("subscriptions/listen")) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        async for line in lines:  # the acknowledgment arrived: the subscription is live
            if "subscriptions/acknowledged" in line:
                break

        async def drain() -> None:
            async for _ in lines:
                pass

        reader = asyncio.create_task(drain())
        try:
            yield
        finally:
            reader.cancel()


async def test_resource_updated_on_a_clients_listen_stream_drops_that_read(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    async with client_listening(a.url, ["file:///a"]):
        assert result(await rpc(a.url, "resources/read", {"uri": "file:///a"}))["contents"][0]["text"].endswith("v0")
        result(await rpc(b.url, "resources/read", {"uri": "file:///b"}))
        result(await rpc(b.url, "resources/read", {"uri": "file:///a"}))
        assert await upstream.count("read:file:///a") == 1
        await upstream.change("updated", "file:///a")

        async def changed() -> bool:
            text = result(await rpc(b.url, "resources/read", {"uri": "file:///a"}))["contents"][0]["text"]
            return bool(text.endswith("v1"))

        assert await eventually(changed), "the read stayed cached after resources/updated"
    result(await rpc(a.url, "resources/read", {"uri": "file:///b"}))
    assert await upstream.count("read:file:///b") == 1  # other URIs keep their entries
    # heard on the client's stream and on A's own watch (which subscribes to what A cached)
    assert await metric(a, "mcpgw_response_cache_invalidations_total", "notifications/resources/updated") >= 1


async def test_resource_updated_drops_a_read_with_nobody_else_listening(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """Each replica's watch subscribes to the URIs whose reads it keeps or serves; a new URI
    replaces the stream (the old one closes once the new one is acknowledged)."""
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix)

    def text(message: dict[str, Any]) -> str:
        return str(result(message)["contents"][0]["text"])

    assert text(await rpc(a.url, "resources/read", {"uri": "file:///a"})).endswith("v0")
    assert text(await rpc(b.url, "resources/read", {"uri": "file:///a"})).endswith("v0")
    result(await rpc(a.url, "resources/read", {"uri": "file:///b"}))  # A's filter grows

    async def subscribed() -> bool:  # one stream per replica, A's naming both URIs
        return sorted(await upstream.subscriptions()) == [["file:///a"], ["file:///a", "file:///b"]]

    assert await eventually(subscribed), await upstream.subscriptions()
    await upstream.change("updated", "file:///a")

    async def changed() -> bool:
        return text(await rpc(b.url, "resources/read", {"uri": "file:///a"})).endswith("v1")

    assert await eventually(changed), "the read stayed cached after resources/updated"
    result(await rpc(b.url, "resources/read", {"uri": "file:///b"}))
    assert await upstream.count("read:file:///b") == 1  # other URIs keep their entries
    assert await upstream.count("read:file:///a") == 2


SDK_CACHE_SERVER = REPO_ROOT / "tests" / "servers" / "sdk_cache_server.py"


async def test_a_python_sdk_upstream_hints_and_list_changes(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """The SDK's own cache hints and listen streams (mcp 2.3.0), not this project's fixture."""
    port = free_port()
    argv = [sys.executable, str(SDK_CACHE_SERVER), "--port", str(port)]
    procs.start(f"sdk-cache-{port}", argv).wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    upstream = Upstream(port)
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    first = result(await rpc(a.url, "tools/list"))
    assert (first["ttlMs"], first["cacheScope"]) == (60_000, "public")
    names = {tool["name"] for tool in first["tools"]}
    assert {tool["name"] for tool in result(await rpc(b.url, "tools/list"))["tools"]} == names
    assert await metric(b, "mcpgw_response_cache_hits_total", "tools/list") == 1
    await watched(upstream, 2)
    assert result(await rpc(a.url, "tools/call", {"name": "grow", "arguments": {"name": "sprout"}}))

    async def grown() -> bool:
        return "sprout" in {tool["name"] for tool in result(await rpc(b.url, "tools/list"))["tools"]}

    assert await eventually(grown), "the SDK's tools/list_changed did not reach the cache"
    assert await metric(b, "mcpgw_response_cache_invalidations_total", "notifications/tools/list_changed") >= 1


async def test_on_a_redis_cluster(
    redis_cluster: LocalCluster, procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """One script per lookup and store, in its family's slot: the cache works on a real Cluster."""
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix, *redis_cluster.gateway_args())
    for uri in ("file:///a", "file:///b", "file:///c"):  # families in different slots
        result(await rpc(a.url, "resources/read", {"uri": uri}))
        result(await rpc(b.url, "resources/read", {"uri": uri}))
        assert await upstream.count(f"read:{uri}") == 1
    result(await rpc(a.url, "tools/list"))
    result(await rpc(b.url, "tools/list"))
    assert await upstream.count("tools/list") == 1
    await watched(upstream, 2)
    await upstream.change("tools")

    async def changed() -> bool:
        return bool(result(await rpc(b.url, "tools/list"))["tools"][0]["name"].endswith("-v1"))

    assert await eventually(changed), "tools/list stayed cached after list_changed on the Cluster"
