"""Per-instance era detection: which protocol era each upstream instance speaks.

An instance is asked once, with a 2026-07-28 `server/discover` (server/discover: servers MUST
implement it), when the replica starts and whenever the instance comes back after being down;
the answer is kept in Redis (a fresh replica reads it there instead of asking again) and in
this process, so the request path asks nothing: `era_of` is a dictionary lookup. A 2025-only
server refuses the request (server-everything: `400 Server not initialized`); a 2026 server
answers a result whose `supportedVersions` lists a 2026 version. For a 2025 instance the record
also keeps the instance's `initialize` result, from which the bridge answers `server/discover`
(kept by the bridge at the first discover; dropped when the instance is probed again).
`--upstream-era POOL=2025|2026` pins a pool's era (no probe); `auto` (the default) detects it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway import errors
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.upstream.pools import Pools
from gateway.wire import protocol, sse

log = logging.getLogger("gateway.bridging.eras")

Era = Literal["2025", "2026"]
ERAS: frozenset[str] = frozenset({"2025", "2026"})
AUTO = "auto"
BOTH = "both"  # an instance that speaks both eras: nothing is bridged, nothing probed
MODERN = "2026-07-28"  # the first stateless version: any version from it on is the 2026 era
RECORD_TTL = 7 * 24 * 3600  # s: an instance's era outlives restarts of the gateway, not forever
WATCH_INTERVAL = 0.5  # s between looks at the pools' health (a come-back re-probes)


@dataclass(frozen=True)
class Detection:
    """What one probe found."""

    era: Era


Probe = Callable[[str, str], Awaitable[Detection]]  # (pool, instance) -> Detection; UpstreamError if unreachable

PROBE_ID = "mcp-gateway-era-probe"
# 2026-07-28 basic/index "_meta": the version and capabilities ride in every request.
_DISCOVER = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": PROBE_ID,
        "method": "server/discover",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "mcp-gateway-era-probe", "version": "1"},
            }
        },
    }
).encode()


class DiscoverProbe:
    """The era probe: one 2026-07-28 `server/discover`, with the pool's own credentials only
    (no session is opened on a 2025 instance)."""

    def __init__(self, upstream: UpstreamClient, headers: HeaderPolicy, *, max_body: int) -> None:
        self._upstream = upstream
        self._headers = headers
        self._max_body = max_body

    async def __call__(self, pool: str, instance: str) -> Detection:
        headers = self._headers.build((), pool)
        headers.update(
            {
                "Accept": f"{protocol.JSON}, {protocol.SSE}",
                "Content-Type": protocol.JSON,
                "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "server/discover",
            }
        )
        response = await self._upstream.send("POST", instance, headers, _DISCOVER, retry_connect=False)
        status, is_sse = response.status, response.is_sse
        return Detection(era_of_discover(status, await response.read(self._max_body), is_sse))


def parse_era_pins(items: Iterable[str], pools: Iterable[str]) -> dict[str, str]:
    """`--upstream-era POOL=auto|2025|2026|both` (repeatable) -> {pool: era or "auto"}; every pool present."""
    known = list(pools)
    pins = dict.fromkeys(known, AUTO)
    for item in items:
        for part in item.split(";"):
            if not part.strip():
                continue
            pool, sep, era = part.partition("=")
            pool, era = pool.strip(), era.strip()
            if not sep or era not in ERAS | {AUTO, BOTH}:
                raise errors.ConfigError(f"upstream_era: expected `POOL=auto|2025|2026|both`, got {part!r}")
            if pool not in pins:
                raise errors.ConfigError(f"upstream_era: unknown pool {pool!r} (pools: {', '.join(known)})")
            pins[pool] = era
    return pins


def era_of_discover(status: int, payload: bytes, is_sse: bool) -> Era:
    """The era a `server/discover` answer shows: 2026 only for a result naming a 2026 version."""
    if status != 200:
        return "2025"
    texts = [payload.decode("utf-8", "replace")]
    if is_sse:
        try:
            texts = [e.data for e in sse.Parser().feed(payload + b"\n\n") if e.data]
        except sse.SSEError:
            return "2025"
    for text in texts:
        try:
            message = json.loads(text)
        except ValueError:
            continue
        result = message.get("result") if isinstance(message, dict) else None
        versions = result.get("supportedVersions") if isinstance(result, dict) else None
        if isinstance(versions, list) and any(isinstance(v, str) and v >= MODERN for v in versions):
            return "2026"
    return "2025"


class EraBook:
    """The era of every instance: pins, then this process's memory, then Redis, then a probe."""

    def __init__(self, *, pools: Pools, pins: Mapping[str, str], redis: Redis, keys: Keys, probe: Probe) -> None:
        self._pools = pools
        self._pins = dict(pins)
        self._redis = redis
        self._keys = keys
        self._probe = probe
        self._known: dict[str, Era] = {}
        self._initialized: dict[str, Mapping[str, Any]] = {}
        self._seen_healthy: dict[str, bool] = {}
        self.probes = 0  # probes sent by this process (tests assert no probe per request)

    def pinned(self, pool: str) -> Era | None:
        pin = self._pins.get(pool, AUTO)
        if pin == BOTH:
            return "2026"  # a 2026-07-28 request goes to it as it is
        return pin if pin in ERAS else None  # type: ignore[return-value]

    def era_known(self, pool: str, instance: str) -> Era | None:
        """No IO: the pin or what this process knows (the request path's fast check)."""
        return self.pinned(pool) or self._known.get(instance)

    async def era_of(self, pool: str, instance: str) -> Era:
        """The instance's era; asks Redis, then the instance, only the first time this process meets it.
        An instance that cannot be asked is taken as 2026 (forwarded as it is) and asked again next time."""
        known = self.era_known(pool, instance)
        if known is not None:
            return known
        stored = await self._stored(instance)
        if stored is not None:
            return stored
        try:
            return await self.detect(pool, instance)
        except errors.UpstreamError:
            return "2026"

    async def initialize_result(self, instance: str) -> Mapping[str, Any] | None:
        """A 2025 instance's InitializeResult (for `server/discover`), if one is kept."""
        if instance not in self._initialized:
            await self._stored(instance)
        return self._initialized.get(instance)

    async def keep_initialized(self, instance: str, result: Mapping[str, Any]) -> None:
        self._initialized[instance] = result
        with translated():
            await self._redis.hset(self._keys.upstream_era(instance), "initialized", json.dumps(result))

    async def detect(self, pool: str, instance: str) -> Era:
        """Probe now and remember (here and in Redis)."""
        self.probes += 1
        found = await self._probe(pool, instance)
        self._remember(instance, found.era, None)
        fields = {"era": found.era, "at": str(time.time())}
        key = self._keys.upstream_era(instance)
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
                pipe.expire(key, RECORD_TTL)
                await pipe.execute()
        log.info("upstream %s speaks the %s era", instance, found.era)
        mixed = {self._known[i] for i in self._pools.get(pool).instances if i in self._known}
        if len(mixed) > 1:
            log.warning("pool %s mixes eras %s: 2026 requests to its 2025 instances are bridged", pool, sorted(mixed))
        return found.era

    async def detect_all(self) -> None:
        """Start-up: every healthy instance of an unpinned pool, unless Redis knows it already."""
        jobs = []
        for pool in self._pools.names():
            if self.pinned(pool) is not None:
                continue
            for instance in self._pools.get(pool).instances:
                self._seen_healthy[instance] = self._pools.is_healthy(instance)
                if self._seen_healthy[instance]:
                    jobs.append(self._known_or_detect(pool, instance))
        await asyncio.gather(*jobs)

    async def run(self) -> None:
        """Re-probe an instance when it comes back (it may have been replaced by another server)."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            await self.check_comebacks()

    async def check_comebacks(self) -> None:
        """One look at the pools' health: an instance healthy again since the last look is probed."""
        for pool in self._pools.names():
            if self.pinned(pool) is not None:
                continue
            for instance in self._pools.get(pool).instances:
                healthy = self._pools.is_healthy(instance)
                was = self._seen_healthy.get(instance, True)
                self._seen_healthy[instance] = healthy
                if healthy and not was:
                    await self._detect_quietly(pool, instance)

    async def _known_or_detect(self, pool: str, instance: str) -> None:
        if await self._stored(instance) is None:
            await self._detect_quietly(pool, instance)

    async def _detect_quietly(self, pool: str, instance: str) -> None:
        try:
            await self.detect(pool, instance)
        except errors.GatewayError as exc:  # asked again at its first request
            log.warning("era of %s not detected: %s", instance, exc)

    async def _stored(self, instance: str) -> Era | None:
        with translated():
            raw = await self._redis.hgetall(self._keys.upstream_era(instance))
        stored = raw.get(b"era", b"")
        era = stored.decode() if isinstance(stored, bytes) else str(stored)
        if era not in ERAS:
            return None
        initialized = raw.get(b"initialized")
        self._remember(instance, era, json.loads(initialized) if initialized else None)  # type: ignore[arg-type]
        return era  # type: ignore[return-value]

    def _remember(self, instance: str, era: Era, initialized: Mapping[str, Any] | None) -> None:
        self._known[instance] = era
        if initialized is not None:
            self._initialized[instance] = initialized
        else:
            self._initialized.pop(instance, None)
