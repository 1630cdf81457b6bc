"""The shared response cache (SEP-2549) through real replicas in front of a real upstream process
(`tests/servers/cache_server.py`, which counts the answers it gives): a hit on another replica,
private answers per principal and per credential, expiry after ttlMs, Cache-Control, errors and
calls never cached, a hit while the upstream is down, the flag off, and the metrics. Invalidation
by the upstream's notifications: `test_response_cache_invalidation.py`."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import httpx
import pytest

from tests.integration.conftest import GatewayProc, StartGateways
from tests.integration.procs import REPO_ROOT, Proc, ProcessGroup, free_port
from tests.integration.test_tasks import eventually
from tests.test_security import ISSUER, PUBLIC_PEM, token

CACHE_SERVER = REPO_ROOT / "tests" / "servers" / "cache_server.py"
MODERN = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
AUTH = ["--auth-issuer", ISSUER, "--auth-public-key", PUBLIC_PEM, "--resource-url", "https://gw.example/mcp"]


class Upstream:
    def __init__(self, port: int, proc: Proc | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/mcp"
        self.proc = proc

    async def counts(self) -> dict[str, int]:
        async with httpx.AsyncClient() as client:
            value: dict[str, int] = (await client.get(f"{self.base}/counts")).json()
        return value

    async def count(self, key: str) -> int:
        return (await self.counts()).get(key, 0)

    async def change(self, kind: str, uri: str | None = None, *, quiet: bool = False) -> None:
        params = {"kind": kind, **({"uri": uri} if uri else {}), **({"quiet": "1"} if quiet else {})}
        async with httpx.AsyncClient() as client:
            (await client.post(f"{self.base}/change", params=params)).raise_for_status()

    async def listeners(self) -> int:
        async with httpx.AsyncClient() as client:
            return int((await client.get(f"{self.base}/listeners")).json()["listeners"])

    async def subscriptions(self) -> list[list[str]]:
        """The resources each open listen stream subscribed to."""
        async with httpx.AsyncClient() as client:
            found: list[list[str]] = (await client.get(f"{self.base}/listeners")).json()["subscriptions"]
        return found


def start_upstream(procs: ProcessGroup, *args: str) -> Upstream:
    port = free_port()
    argv = [sys.executable, str(CACHE_SERVER), "--port", str(port), *args]
    proc = procs.start(f"cache-server-{port}", argv)
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    return Upstream(port, proc)


def headers(method: str, name: str | None = None, auth: str | None = None) -> dict[str, str]:
    h = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
    }
    if name is not None:
        h["Mcp-Name"] = name
    if auth is not None:
        h["Authorization"] = f"Bearer {auth}"
    return h


async def rpc(
    url: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    rid: Any = 1,
    auth: str | None = None,
    raw_auth: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    params = {**(params or {}), "_meta": META}
    name = params.get("uri") or params.get("name")
    h = {**headers(method, name, auth), **(extra or {})}
    if raw_auth is not None:
        h["Authorization"] = raw_auth
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(url, json=body, headers=h)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        lines = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return next(m for m in map(json.loads, filter(None, lines)) if "id" in m)
    message: dict[str, Any] = response.json()
    return message


def result(message: dict[str, Any]) -> dict[str, Any]:
    assert "result" in message, message
    value: dict[str, Any] = message["result"]
    return value


async def metric(gw: GatewayProc, name: str, method: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(gw.metrics_url)).text
    found = re.search(rf'^{name}\{{[^}}]*="{re.escape(method)}"[^}}]*\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def replicas(start: StartGateways, upstream: Upstream, key_prefix: str, *extra: str, n: int = 2) -> list[GatewayProc]:
    # pinned: era detection's one server/discover would be counted with the clients' own
    gateways = start(n, {"default": upstream.url}, key_prefix, ["--upstream-era", "default=both", *extra])
    for gw in gateways:
        gw.proc.wait_http(f"{gw.base_url}/readyz", timeout=20)
    return gateways


async def watched(upstream: Upstream, n: int) -> None:
    """Until `n` listen streams are open on the upstream (each replica's watch, and clients')."""
    assert await eventually(lambda: _at_least(upstream, n)), "the replicas' watch streams never opened"


async def _at_least(upstream: Upstream, n: int) -> bool:
    return await upstream.listeners() >= n


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_an_answer_is_served_by_another_replica(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str, sse: bool
) -> None:
    upstream = start_upstream(procs, *(["--sse"] if sse else []))
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    for method in ("tools/list", "prompts/list", "resources/list", "server/discover"):
        first = await rpc(a.url, method, rid=11)
        second = await rpc(b.url, method, rid="again")
        assert await upstream.count(method) == 1, method  # the second never reached the upstream
        assert second["id"] == "again" and first["id"] == 11
        fresh, cached = result(first), result(second)
        assert {**cached, "ttlMs": 0} == {**fresh, "ttlMs": 0}  # identical but for the remaining ttl
        assert 0 < cached["ttlMs"] <= fresh["ttlMs"] == 60_000
        assert await metric(b, "mcpgw_response_cache_hits_total", method) == 1
        assert await metric(a, "mcpgw_response_cache_misses_total", method) == 1
        assert await metric(a, "mcpgw_response_cache_stores_total", method) == 1
    # another question is another entry: a cursor, or another URI
    await rpc(a.url, "tools/list", {"cursor": "p2"})
    assert await upstream.count("tools/list") == 2
    for gw in (a, b, a):
        result(await rpc(gw.url, "resources/read", {"uri": "file:///a"}))
    result(await rpc(b.url, "resources/read", {"uri": "file:///b"}))
    assert (await upstream.count("read:file:///a"), await upstream.count("read:file:///b")) == (1, 1)


async def test_cache_control_no_cache_refreshes_and_no_store_keeps_nothing(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    result(await rpc(a.url, "tools/list"))
    await upstream.change("tools", quiet=True)  # a change the upstream does not announce
    assert result(await rpc(b.url, "tools/list"))["tools"][0]["name"] == "tool-v0"  # cached
    fresh = result(await rpc(b.url, "tools/list", extra={"Cache-Control": "no-cache"}))
    assert fresh["tools"][0]["name"] == "tool-v1" and fresh["ttlMs"] == 60_000
    assert result(await rpc(a.url, "tools/list"))["tools"][0]["name"] == "tool-v1"  # the refresh was kept
    assert await upstream.count("tools/list") == 2
    for gw in (a, b):
        result(await rpc(gw.url, "prompts/list", extra={"Cache-Control": "no-store"}))
    assert await upstream.count("prompts/list") == 2


async def test_discover_of_a_pool_with_served_tasks_is_not_cached(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """The gateway merges its tasks capability into that answer: it is not the upstream's to keep."""
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix, "--task-tools", "default=slow_*")
    for gw in (a, b):
        found = result(await rpc(gw.url, "server/discover"))
        assert "io.modelcontextprotocol/tasks" in found["capabilities"]["extensions"]
    assert await upstream.count("server/discover") == 2
    result(await rpc(a.url, "tools/list"))
    result(await rpc(b.url, "tools/list"))
    assert await upstream.count("tools/list") == 1  # the rest of the pool is cached as usual


async def test_a_fresh_entry_is_served_while_the_upstream_is_down(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    listed = result(await rpc(a.url, "tools/list"))
    assert upstream.proc is not None
    upstream.proc.kill()
    assert result(await rpc(b.url, "tools/list"))["tools"] == listed["tools"]  # from Redis
    missed = await rpc(b.url, "prompts/list")  # not cached: the upstream is needed, and gone
    assert "error" in missed and "result" not in missed


async def test_errors_and_calls_are_never_cached(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    for gw in (a, b):
        assert "error" in await rpc(gw.url, "resources/read", {"uri": "missing:///x"})
        result(await rpc(gw.url, "tools/call", {"name": "echo", "arguments": {}}))
    assert await upstream.count("read:missing:///x") == 2
    assert await upstream.count("tools/call") == 2


async def test_private_answers_stay_with_their_principal(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix, *AUTH)
    alice, bob = token("alice"), token("bob")
    mine = {"uri": "private:///me"}
    first = result(await rpc(a.url, "resources/read", mine, auth=alice))
    again = result(await rpc(b.url, "resources/read", mine, auth=alice))
    assert first["cacheScope"] == "private" and again["contents"] == first["contents"]
    assert await upstream.count("read:private:///me") == 1  # alice's own entry, on another replica
    result(await rpc(b.url, "resources/read", mine, auth=bob))
    assert await upstream.count("read:private:///me") == 2  # never alice's answer for bob
    result(await rpc(a.url, "resources/read", mine, auth=bob))
    assert await upstream.count("read:private:///me") == 2  # bob's own entry
    # public answers are shared across principals
    result(await rpc(a.url, "tools/list", auth=alice))
    result(await rpc(b.url, "tools/list", auth=bob))
    assert await upstream.count("tools/list") == 1


async def test_without_auth_private_answers_are_keyed_by_the_credentials_sent(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    # the upstream reads the client's token: its pool asks for it (not passed on by default)
    a, b = replicas(gateway_cluster, upstream, key_prefix, "--forward-authorization", "default")
    mine = {"uri": "private:///me"}
    for gw in (a, b):  # anonymous: nobody to keep a private answer for
        result(await rpc(gw.url, "resources/read", mine))
    assert await upstream.count("read:private:///me") == 2
    x = result(await rpc(a.url, "resources/read", mine, raw_auth="Bearer x"))
    assert result(await rpc(b.url, "resources/read", mine, raw_auth="Bearer x"))["contents"] == x["contents"]
    assert await upstream.count("read:private:///me") == 3  # the upstream saw token x once
    y = result(await rpc(b.url, "resources/read", mine, raw_auth="Bearer y"))
    assert await upstream.count("read:private:///me") == 4 and "Bearer y" in y["contents"][0]["text"]


async def test_an_entry_is_not_served_past_its_ttl(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix)
    short = {"uri": "short:///x"}
    assert result(await rpc(a.url, "resources/read", short))["ttlMs"] == 300

    async def refetched() -> bool:
        served = result(await rpc(b.url, "resources/read", short))
        assert 0 < served["ttlMs"] <= 300  # a cached copy never promises more than what is left
        return await upstream.count("read:short:///x") >= 2

    assert await eventually(refetched), "the entry outlived its ttlMs"


async def test_with_the_flag_off_every_request_reaches_the_upstream(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_upstream(procs)
    a, b = replicas(gateway_cluster, upstream, key_prefix, "--response-cache", "false")
    for gw in (a, b, a):
        assert result(await rpc(gw.url, "tools/list"))["ttlMs"] == 60_000
    assert await upstream.count("tools/list") == 3
    assert await upstream.listeners() == 0  # no watch streams either
    assert await metric(a, "mcpgw_response_cache_misses_total", "tools/list") == 0
