"""Each replica's own `subscriptions/listen` stream to every upstream instance, for the cache.

2026-07-28 servers announce list changes only on `subscriptions/listen` streams (basic/patterns/
subscriptions), and only to a caller that asked. So that cached lists are dropped even when no
client listens, every replica keeps one listen stream per instance opted in to the three list
changes; a notification bumps the pool's family generation in Redis, which every replica reads.
A replica watches a pool once it first keeps or serves one of its entries (an upstream that never
sends ttlMs gets no listen stream), stops watching an instance that does not serve
`subscriptions/listen` (a 4xx, or a JSON answer: ttlMs alone bounds staleness there), and re-opens
a stream that ended or failed (a 5xx, an unreachable instance: after a backoff);
a re-opened stream bumps the pool's lists (changes made while nobody listened are not lost).
`resources/updated` needs the URIs named in the filter: it invalidates reads when it passes on a
client's own listen stream (`ResponseCache.watch_stream`), and otherwise ttlMs bounds staleness.
"""

from __future__ import annotations

import asyncio
import json
import logging

from gateway import errors, retry
from gateway.caching.service import ResponseCache, sse_messages
from gateway.supervisor import Supervisor, checkpoint
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.upstream.pools import Pools
from gateway.wire import caching, protocol, sse

log = logging.getLogger("gateway.caching.watch")

VERSION = "2026-07-28"
ACKNOWLEDGED = caching.ACKNOWLEDGED
LIST_FAMILIES = tuple(sorted(set(caching.LIST_CHANGED.values())))
# basic/patterns/subscriptions §Notification Filter: the list changes (no URIs to name here).
_BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": "mcpgw-cache-watch",
        "method": "subscriptions/listen",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": VERSION,
                "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway-cache", "version": "1"},
                "io.modelcontextprotocol/clientCapabilities": {},
            },
            "notifications": {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True},
        },
    }
).encode()


class NotListening(Exception):
    """The instance does not serve `subscriptions/listen` (not an error of any request)."""


class Watcher:
    def __init__(
        self,
        *,
        pools: Pools,
        upstream: UpstreamClient,
        headers: HeaderPolicy,
        cache: ResponseCache,
        supervisor: Supervisor,
        max_line: int,
    ) -> None:
        self._pools = pools
        self._upstream = upstream
        self._headers = headers
        self._cache = cache
        self._supervisor = supervisor
        self._max_line = max_line
        self._watched: set[str] = set()

    def watch(self, pool: str) -> None:
        """Start watching `pool`'s instances (once per replica; called on every cache use)."""
        if pool in self._watched:
            return
        self._watched.add(pool)
        for url in self._pools.get(pool).instances:
            try:
                self._supervisor.spawn(self._watch(pool, url), name=f"cache-watch:{pool}:{url}")
            except RuntimeError:  # shutting down: the supervisor takes no new work
                return

    def _request_headers(self, pool: str) -> dict[str, str]:
        fixed = [
            ("Content-Type", protocol.JSON),
            ("Accept", f"{protocol.JSON}, {protocol.SSE}"),
            ("MCP-Protocol-Version", VERSION),
            ("Mcp-Method", "subscriptions/listen"),
        ]
        return self._headers.build(fixed, pool)  # plus the pool's own upstream credentials

    async def _watch(self, pool: str, url: str) -> None:
        failures = 0
        reopened = False
        while True:
            checkpoint()
            try:
                acknowledged = await self.listen_once(pool, url, reopened=reopened)
            except NotListening as exc:
                log.info("cache watch of %s stopped: %s (cached entries end with their ttlMs)", url, exc)
                return
            except errors.GatewayError as exc:
                log.debug("cache watch of %s: %s", url, exc)
                acknowledged = False
            reopened = True
            failures = 0 if acknowledged else failures + 1
            await asyncio.sleep(retry.cache_watch_delay(failures))

    async def listen_once(self, pool: str, url: str, *, reopened: bool = False) -> bool:
        """One listen stream, until it ends; True when the upstream acknowledged it."""
        response = await self._upstream.send("POST", url, self._request_headers(pool), _BODY, retry_connect=False)
        acknowledged = False
        try:
            if response.status >= 500:
                raise errors.UpstreamError(f"subscriptions/listen answered {response.status}")  # try again later
            if response.status != 200 or not response.is_sse:
                raise NotListening(f"subscriptions/listen answered {response.status} {response.content_type}")
            parser = sse.Parser(self._max_line)
            async for chunk in response.chunks():
                for message in sse_messages(parser, chunk):
                    if message.get("method") == ACKNOWLEDGED and not acknowledged:
                        acknowledged = True
                        if reopened:  # a change may have happened while nobody listened
                            await self._cache.invalidate(pool, LIST_FAMILIES, ACKNOWLEDGED)
                    elif "id" in message and "error" in message:
                        raise NotListening(f"subscriptions/listen refused: {message['error']}")
                    else:
                        await self._cache.invalidate(pool, caching.invalidated(message), str(message.get("method")))
        finally:
            response.close()
        return acknowledged
