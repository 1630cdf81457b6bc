"""Replica liveness: one heartbeat per replica instead of one lease renewal per stream.

A stream's lease names the replica that pumps it and is never renewed per stream. Whether that
replica still lives is decided here, by two signs, both of which must hold:

* its liveness key `{prefix}:replica:{R}` exists: renewed every `interval`, expiring after `ttl`,
  so a replica that is paused (SIGSTOP, a long GC) or cut off from Redis lapses within `ttl`;
* its presence channel `{prefix}:presence:{R}` has a subscriber: the replica's tail holds that
  subscription on its pub/sub connection, which the kernel closes the instant the process dies,
  so a SIGKILLed replica is seen dead at the next check instead of after the TTL.

Being declared dead wrongly (a long pause) is safe: a takeover is a compare-and-set on the lease
and every append checks the lease, so the paused replica's writes are refused when it wakes up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway import errors
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.supervisor import checkpoint

log = logging.getLogger(__name__)


class Liveness:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        replica_id: str,
        *,
        ttl: float,
        interval: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.replica_id = replica_id
        self._ttl_ms = max(1, int(ttl * 1000))
        self.interval = interval
        self.lapses = 0

    async def beat(self) -> bool:
        """Renew this replica's key; False when it had expired (others may have taken our streams)."""
        with translated():
            previous: Any = await self._redis.set(self._keys.replica(self.replica_id), b"1", px=self._ttl_ms, get=True)
        return previous is not None

    async def run(self, on_lapse: Callable[[], Awaitable[None]] | None = None) -> None:
        """Heartbeat until cancelled; a lapse (our key had expired) calls `on_lapse` (the owner verifies its leases)."""
        failing = False
        while True:
            checkpoint()
            await asyncio.sleep(self.interval)
            try:
                renewed = await self.beat()
            except errors.StoreError as exc:
                checkpoint()
                if not failing:
                    log.error("liveness heartbeat failed (will keep trying): %s", exc)
                failing = True
                continue
            failing = False
            if not renewed:
                self.lapses += 1
                log.warning("liveness key had expired (paused or cut off?): verifying this replica's leases")
                if on_lapse is not None:
                    await on_lapse()

    async def is_alive(self, replica: str) -> bool:
        return replica in await self.alive([replica])

    async def alive(self, replicas: Iterable[str]) -> set[str]:
        """The replicas among `replicas` that are alive now (this one always is)."""
        others = sorted({r for r in replicas if r != self.replica_id})
        found = {self.replica_id} & set(replicas)
        if not others:
            return found
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                for replica in others:
                    pipe.exists(self._keys.replica(replica))
                beating: list[Any] = await pipe.execute()
            listening: Any = await self._redis.pubsub_shardnumsub(*(self._keys.presence(r) for r in others))
        subscribers = {_text(channel): int(count) for channel, count in listening}
        for replica, exists in zip(others, beating, strict=True):
            if int(exists) and subscribers.get(self._keys.presence(replica), 0) > 0:
                found.add(replica)
        return found

    async def clear(self) -> None:
        """Graceful exit: drop the key so nobody waits for it to expire."""
        with translated():
            await self._redis.delete(self._keys.replica(self.replica_id))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
