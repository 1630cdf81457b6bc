"""Upstream sessions the bridge holds for 2026-07-28 clients, shared by every replica through Redis.

A 2025 upstream keeps per-session state (subscriptions, log level, what the client declared at
initialize: the SDK server refuses to elicit, -32021, unless the session's client declared it), so
a session is keyed by (instance, principal, declared client capabilities): one principal's session
never serves another's, and a client gets a session initialized with its own capabilities. The
key is a digest; its record (upstream session id and version) lives in Redis with an idle TTL, so
any replica uses the same session, and only the first request of a key initializes one.

Bounded and reaped: a sorted set per instance scores each session by its last use. Past
`max_per_instance` the least recently used is closed; a session unused for `idle` seconds is
closed by whichever replica's reaper removes it from the set first (ZREM is the claim), with a
DELETE upstream (2025 transports §Session Management).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.bridging.onto_2025.handshake import Opened
from gateway.bridging.onto_2025.translate import canonical
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.upstream.pools import Pools

log = logging.getLogger("gateway.bridging.onto_2025.sessions")


@dataclass(frozen=True)
class Held:
    digest: str
    pool: str
    instance: str
    sid: str
    version: str


class Lifecycle(Protocol):
    """Opens and closes upstream sessions (`handshake.Handshake`)."""

    async def open(
        self, pool: str, instance: str, capabilities: Mapping[str, Any], info: Mapping[str, Any]
    ) -> Opened: ...

    async def close(self, pool: str, instance: str, sid: str, version: str) -> None: ...


def session_digest(instance: str, principal: str, capabilities: Mapping[str, Any]) -> str:
    material = canonical([instance, principal, capabilities]).encode()
    return hashlib.sha256(material).hexdigest()[:32]


class HeldSessions:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        handshake: Lifecycle,
        pools: Pools,
        max_per_instance: int,
        idle: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._handshake = handshake
        self._pools = pools
        self._max = max_per_instance
        self._idle = idle
        self._clock = clock
        self.opened = 0  # upstream sessions this process initialized (tests: none per request)
        self.closed = 0

    async def get(
        self, pool: str, instance: str, principal: str, capabilities: Mapping[str, Any], info: Mapping[str, Any]
    ) -> Held:
        """The held session of this key, initialized upstream when there is none yet."""
        digest = session_digest(instance, principal, capabilities)
        key, held_set = self._keys.bridge_session(digest), self._keys.bridge_held(instance)
        with translated():
            raw = await self._redis.get(key)
        if raw is not None:
            await self._touch(key, held_set, digest)
            return _held(digest, raw)
        opened = await self._handshake.open(pool, instance, capabilities, info)
        self.opened += 1
        value = json.dumps({"pool": pool, "instance": instance, "sid": opened.sid, "version": opened.version})
        with translated():
            won = await self._redis.set(key, value, nx=True, ex=self._ttl())
            raw = value.encode() if won else await self._redis.get(key)
        if not won:  # another replica opened one at the same time: use theirs, close ours
            await self._handshake.close(pool, instance, opened.sid, opened.version)
            self.closed += 1
        if raw is None:  # theirs was reaped in between: keep ours after all
            raw = value.encode()
            with translated():
                await self._redis.set(key, value, ex=self._ttl())
        await self._touch(key, held_set, digest)
        await self._bound(held_set)
        return _held(digest, raw)

    async def by_digest(self, digest: str) -> Held | None:
        """The held session of a key, if it still exists (a retry of a multi round-trip request)."""
        with translated():
            raw = await self._redis.get(self._keys.bridge_session(digest))
        return None if raw is None else _held(digest, raw)

    @property
    def idle(self) -> float:
        return self._idle

    async def touch(self, held: Held) -> None:
        """Still in use (a long call or listen): the reaper leaves it."""
        await self._touch(self._keys.bridge_session(held.digest), self._keys.bridge_held(held.instance), held.digest)

    async def keep_until(self, held: Held, until: float) -> None:
        """Kept at least until `until` (a call waits upstream for its client's answer until then)."""
        key, held_set = self._keys.bridge_session(held.digest), self._keys.bridge_held(held.instance)
        await self._touch(key, held_set, held.digest, until - self._idle)

    async def forget(self, held: Held) -> None:
        """The upstream no longer knows this session (404): the next `get` opens a new one."""
        key = self._keys.bridge_session(held.digest)
        with translated():
            raw = await self._redis.get(key)
            if raw is not None and _held(held.digest, raw).sid == held.sid:
                await self._redis.delete(key)
                await self._redis.zrem(self._keys.bridge_held(held.instance), held.digest)

    async def count(self, instance: str) -> int:
        with translated():
            return int(await self._redis.zcard(self._keys.bridge_held(instance)))

    async def reap(self) -> int:
        """Close every session idle longer than `idle`; the replica whose ZREM removes it closes it."""
        reaped = 0
        horizon = self._clock() - self._idle
        for instance in self._pools.instances():
            with translated():
                stale = await self._redis.zrangebyscore(self._keys.bridge_held(instance), "-inf", horizon)
            for digest in stale:
                reaped += await self._close(instance, _text(digest))
        return reaped

    async def run(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self._idle / 4))
            try:
                await self.reap()
            except Exception:  # a store blip: the next round reaps what this one missed
                log.exception("reaping held upstream sessions failed")

    async def _touch(self, key: str, held_set: str, digest: str, used: float | None = None) -> None:
        """Last used at `used` (default now; later: kept that much longer); never moved back."""
        now = self._clock()
        used = now if used is None else max(now, used)
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.expire(key, self._ttl() + int(used - now), gt=True)
                pipe.expire(key, self._ttl(), nx=True)  # GT leaves a key without a TTL as it is
                pipe.zadd(held_set, {digest: used}, gt=True)
                await pipe.execute()

    async def _bound(self, held_set: str) -> None:
        with translated():
            excess = int(await self._redis.zcard(held_set)) - self._max
            victims = await self._redis.zrange(held_set, 0, excess - 1) if excess > 0 else []
        instance = held_set.removeprefix(self._keys.bridge_held(""))
        for digest in victims:
            await self._close(instance, _text(digest))

    async def _close(self, instance: str, digest: str) -> int:
        with translated():
            if not await self._redis.zrem(self._keys.bridge_held(instance), digest):
                return 0  # another replica claimed it
            key = self._keys.bridge_session(digest)
            raw = await self._redis.get(key)
            await self._redis.delete(key)
        if raw is not None:
            held = _held(digest, raw)
            await self._handshake.close(held.pool, held.instance, held.sid, held.version)
        self.closed += 1
        return 1

    def _ttl(self) -> int:
        # Outlives the idle bound: the reaper finds the record and closes the upstream session.
        return int(self._idle * 2) + 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _held(digest: str, raw: bytes | str) -> Held:
    value = json.loads(raw)
    return Held(digest, value["pool"], value["instance"], value["sid"], value["version"])
