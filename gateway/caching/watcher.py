"""Each replica's own `subscriptions/listen` stream to every upstream instance, for the cache.

2026-07-28 servers announce changes only on `subscriptions/listen` streams (basic/patterns/
subscriptions), and only to a caller that asked. So that cached answers are dropped even when no
client listens, a replica keeps one listen stream per instance of each pool whose entries it keeps
or serves: opted in to the three list changes and to `resources/updated` for the URIs whose reads
it cached (the newest MAX_URIS per pool). A notification bumps its family's generation in Redis,
which every replica reads. A new URI opens a new stream with the longer filter and closes the old
one once the new one is acknowledged (no moment without a listener); a stream that ended or failed
is re-opened (after a backoff for a 5xx or an unreachable instance), and a stream opened after such
a gap bumps the pool's lists and watched reads (changes made while nobody listened are not lost).
An instance that answers the listen request with a 4xx or a JSON answer is not watched again (ttlMs
alone bounds staleness there). Clients' own listen streams through the gateway invalidate too
(`ResponseCache.watch_stream`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Sequence

from gateway import errors, retry
from gateway.caching.invalidations import Invalidator
from gateway.supervisor import Supervisor, checkpoint
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.upstream.pools import Pools
from gateway.wire import caching, protocol, sse

log = logging.getLogger("gateway.caching.watch")

VERSION = "2026-07-28"
ACKNOWLEDGED = caching.ACKNOWLEDGED
LIST_FAMILIES = tuple(sorted(set(caching.LIST_CHANGED.values())))
MAX_URIS = 256  # resources watched per pool (the newest); older reads end with their ttlMs


def listen_body(uris: Sequence[str]) -> bytes:
    """basic/patterns/subscriptions §Notification Filter: every list change, and these resources."""
    wanted: dict[str, object] = {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}
    if uris:
        wanted["resourceSubscriptions"] = list(uris)
    meta = {
        "io.modelcontextprotocol/protocolVersion": VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway-cache", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    message = {"jsonrpc": "2.0", "id": "mcpgw-cache-watch", "method": "subscriptions/listen"}
    return json.dumps({**message, "params": {"_meta": meta, "notifications": wanted}}).encode()


class NotListening(Exception):
    """The instance does not serve `subscriptions/listen` (not an error of any request)."""


class Watcher:
    def __init__(
        self,
        *,
        pools: Pools,
        upstream: UpstreamClient,
        headers: HeaderPolicy,
        cache: Invalidator,
        supervisor: Supervisor,
        max_line: int,
    ) -> None:
        self._pools = pools
        self._upstream = upstream
        self._headers = headers
        self._cache = cache
        self._supervisor = supervisor
        self._max_line = max_line
        self._uris: dict[str, dict[str, None]] = {}  # pool -> watched URIs, oldest first
        self._wake: dict[tuple[str, str], asyncio.Event] = {}  # (pool, instance): re-open the stream
        self._newest: dict[tuple[str, str], object] = {}  # (pool, instance): token of its newest stream

    def watch(self, pool: str, uri: str | None = None) -> None:
        """Watch `pool`'s instances, and `uri` among its resources (cheap when nothing is new)."""
        uris = self._uris.get(pool)
        if uris is None:
            uris = self._uris[pool] = {}
            if uri is not None:
                uris[uri] = None
            instances = self._pools.get(pool).instances
            self._wake.update({(pool, url): asyncio.Event() for url in instances})
            for url in instances:
                try:
                    self._supervisor.spawn(self._watch(pool, url), name=f"cache-watch:{pool}:{url}")
                except RuntimeError:  # shutting down: the supervisor takes no new work
                    return
            return
        if uri is None or uri in uris:
            return
        uris[uri] = None
        while len(uris) > MAX_URIS:
            del uris[next(iter(uris))]
        for url in self._pools.get(pool).instances:
            self._wake[(pool, url)].set()  # a new filter: open a new stream

    def _request_headers(self, pool: str) -> dict[str, str]:
        fixed = [
            ("Content-Type", protocol.JSON),
            ("Accept", f"{protocol.JSON}, {protocol.SSE}"),
            ("MCP-Protocol-Version", VERSION),
            ("Mcp-Method", "subscriptions/listen"),
        ]
        return self._headers.build(fixed, pool)  # plus the pool's own upstream credentials

    def _ended(self, key: tuple[str, str], token: object) -> None:
        if self._newest.get(key) is token:  # an older stream closed for its successor: nothing to do
            self._wake[key].set()

    async def _watch(self, pool: str, url: str) -> None:
        """Keep one acknowledged listen stream open to `url`, re-opened with each new filter."""
        key = (pool, url)
        wake = self._wake[key]
        streams: list[asyncio.Task[bool]] = []  # open streams, newest last
        failures = 0
        gap = False  # nobody listened for a while: the first acknowledgment bumps what is watched
        try:
            while True:
                checkpoint()
                wake.clear()
                uris = tuple(self._uris[pool])
                token = self._newest[key] = object()
                older = tuple(streams)
                stream = self.listen_once(
                    pool,
                    url,
                    uris=uris,
                    reopened=gap,
                    on_ack=functools.partial(_cancel, older),
                    on_end=functools.partial(self._ended, key, token),
                )
                try:
                    newest = self._supervisor.spawn(stream, name=f"cache-listen:{pool}:{url}")
                except RuntimeError:  # the supervisor closed: shutting down
                    return
                streams.append(newest)
                await wake.wait()  # a new URI, or the newest stream ended
                streams = [task for task in streams if not task.done()]
                if not newest.done():
                    continue  # a new filter: a successor replaces the open stream once acknowledged
                try:
                    acknowledged = newest.result()
                except NotListening as exc:
                    log.info("cache watch of %s stopped: %s (cached entries end with their ttlMs)", url, exc)
                    return
                except errors.GatewayError as exc:
                    log.debug("cache watch of %s: %s", url, exc)
                    acknowledged = False
                gap = not streams  # no older stream still open: nobody listens until the next ack
                failures = 0 if acknowledged else failures + 1
                await asyncio.sleep(retry.cache_watch_delay(failures))
        finally:
            _cancel(streams)

    async def listen_once(
        self,
        pool: str,
        url: str,
        *,
        uris: Sequence[str] = (),
        reopened: bool = False,
        on_ack: Callable[[], None] = lambda: None,
        on_end: Callable[[], None] = lambda: None,
    ) -> bool:
        """One listen stream, until it ends; True when the upstream acknowledged it."""
        acknowledged = False
        try:
            headers = self._request_headers(pool)
            response = await self._upstream.send("POST", url, headers, listen_body(uris), retry_connect=False)
            try:
                if response.status >= 500:
                    raise errors.UpstreamError(f"subscriptions/listen answered {response.status}")  # try again
                if response.status != 200 or not response.is_sse:
                    raise NotListening(f"subscriptions/listen answered {response.status} {response.content_type}")
                parser = sse.Parser(self._max_line)
                async for chunk in response.chunks():
                    for message in sse.json_messages(parser, chunk):
                        if message.get("method") == ACKNOWLEDGED and not acknowledged:
                            acknowledged = True
                            on_ack()
                            if reopened:  # a change may have happened while nobody listened
                                families = [*LIST_FAMILIES, *map(caching.family_of_read, uris)]
                                await self._cache.invalidate(pool, families, ACKNOWLEDGED)
                        elif "id" in message and "error" in message:
                            raise NotListening(f"subscriptions/listen refused: {message['error']}")
                        else:
                            reason = str(message.get("method"))
                            await self._cache.invalidate(pool, caching.invalidated(message), reason)
            finally:
                response.close()
        finally:
            on_end()
        return acknowledged


def _cancel(tasks: Sequence[asyncio.Task[bool]]) -> None:
    for task in tasks:
        task.cancel()
