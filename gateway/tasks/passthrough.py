"""Tasks that an upstream creates itself (it implements the extension): pass-through with affinity.

A 2026-07-28 upstream's task lives on the instance that created it, while the stateless era sends
each request to any instance. So when a `tools/call` that negotiated the extension is answered
with a CreateTaskResult, the route (instance, principal, pool) is written to Redis *before* the
answer reaches the client; `tasks/get|update|cancel` for that id then go to that instance, and
only for the principal that created it (anyone else: "task not found", as for gateway tasks).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.tasks import protocol
from gateway.wire import sse


@dataclass(frozen=True)
class Route:
    instance: str
    principal: str
    pool: str


MAX_TASK_ID = 256  # longer upstream ids are relayed but not routed


def created_task(message: Mapping[str, Any], request_id: Any) -> tuple[str, int | None] | None:
    """(taskId, ttlMs) when `message` answers `request_id` with a CreateTaskResult (tasks §Task Creation)."""
    result = message.get("result")
    if message.get("id") != request_id or not isinstance(result, dict) or result.get("resultType") != "task":
        return None
    task_id, ttl = result.get("taskId"), result.get("ttlMs")
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_TASK_ID:
        return None
    return task_id, ttl if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0 else None


class TaskRoutes:
    def __init__(self, redis: Redis, keys: Keys, *, default_ttl_ms: int, max_line: int) -> None:
        self._redis = redis
        self._keys = keys
        self._default_ttl_ms = default_ttl_ms
        self._max_line = max_line

    async def remember(self, task_id: str, route: Route, ttl_ms: int | None) -> None:
        key = self._keys.task_route(task_id)
        with translated():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"instance": route.instance, "principal": route.principal, "pool": route.pool})
                pipe.pexpire(key, ttl_ms or self._default_ttl_ms)  # ttlMs null (unlimited): ours
                await pipe.execute()

    async def instance_for(self, params: Mapping[str, Any], principal: str, pool: str) -> str | None:
        """The instance holding this upstream task; None: the gateway never saw it created."""
        task_id = params.get(protocol.NAME_PARAM)
        if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_TASK_ID:
            return None
        with translated():
            raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.task_route(task_id))  # type: ignore[assignment]
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        # tasks §Security Considerations (auth binding): another caller's task does not exist for it.
        if not hmac.compare_digest(fields.get("principal", ""), principal) or fields.get("pool") != pool:
            raise protocol.unknown_task()
        return fields["instance"]

    async def record_json(self, payload: bytes, request_id: Any, route: Route) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if isinstance(message, dict):
            await self._record(message, request_id, route)

    async def record_stream(self, chunks: AsyncIterator[bytes], request_id: Any, route: Route) -> AsyncIterator[bytes]:
        """Relay the chunks; the route is stored before the chunk that completes the task answer."""
        parser = sse.Parser(self._max_line)
        async for chunk in chunks:
            for message in sse.json_messages(parser, chunk):
                await self._record(message, request_id, route)
            yield chunk

    async def _record(self, message: Mapping[str, Any], request_id: Any, route: Route) -> None:
        created = created_task(message, request_id)
        if created is not None:
            await self.remember(created[0], route, created[1])
