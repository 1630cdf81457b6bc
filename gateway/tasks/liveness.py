"""Replica liveness, as much as the task runner needs of it.

The lead's `gateway/streams/liveness.py` (not on main yet) will own the heartbeat key
`{prefix}:replica:{R}`; until then `ReplicaHeartbeat` keeps it: SET PX `ttl` renewed every
`interval`. Tasks only depend on the `Liveness` protocol, so swapping the implementation is a
one-line change in the app lifespan.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway import errors
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys

log = logging.getLogger("gateway.tasks.liveness")


class Liveness(Protocol):
    """Is the replica that runs a task still there? (A paused one is fenced by the store.)"""

    @property
    def replica_id(self) -> str: ...

    async def is_alive(self, replica_id: str) -> bool: ...


class ReplicaHeartbeat:
    def __init__(self, redis: Redis, keys: Keys, replica_id: str, *, ttl: float = 1.0, interval: float = 0.2) -> None:
        self._redis = redis
        self._keys = keys
        self._replica_id = replica_id
        self._ttl_ms = int(ttl * 1000)
        self._interval = interval

    @property
    def replica_id(self) -> str:
        return self._replica_id

    async def beat(self) -> None:
        with translated():
            await self._redis.set(self._keys.replica(self._replica_id), "1", px=self._ttl_ms)

    async def run(self) -> None:
        """Owned by the Supervisor; a Redis blip only delays the next beat."""
        while True:
            try:
                await self.beat()
            except errors.StoreError as exc:
                log.warning("replica heartbeat failed: %s", exc)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        """On shutdown: say at once that this replica is gone (its tasks fail without waiting for the TTL)."""
        with translated():
            await self._redis.delete(self._keys.replica(self._replica_id))

    async def is_alive(self, replica_id: str) -> bool:
        with translated():
            return bool(await self._redis.exists(self._keys.replica(replica_id)))
