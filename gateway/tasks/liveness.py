"""Replica liveness, as much as the task service needs of it: is a task's runner still there?

Tasks depend on this small protocol only; `ReplicaLiveness` adapts the replica heartbeat of
`gateway/streams/liveness.py` (liveness key plus presence channel: a SIGKILLed replica is seen
dead at once, a paused one within the key's TTL and is then fenced by the task store).
"""

from __future__ import annotations

from typing import Protocol

from gateway.streams.liveness import Liveness


class RunnerLiveness(Protocol):
    @property
    def replica_id(self) -> str: ...

    async def is_alive(self, replica_id: str) -> bool: ...


class ReplicaLiveness:
    def __init__(self, liveness: Liveness) -> None:
        self._liveness = liveness

    @property
    def replica_id(self) -> str:
        return self._liveness.replica_id

    async def is_alive(self, replica_id: str) -> bool:
        return replica_id in await self._liveness.alive([replica_id])
