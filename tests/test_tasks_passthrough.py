"""Routes of tasks an upstream created: recognising a CreateTaskResult, the record in real Redis
(TTL from ttlMs, principal and pool binding), and the route stored before the answer is relayed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.store.keys import Keys
from gateway.tasks.passthrough import Route, TaskRoutes, created_task

CREATED: dict[str, Any] = {"jsonrpc": "2.0", "id": 3, "result": {"resultType": "task", "taskId": "up-1", "ttlMs": 5000}}


def test_created_task_is_recognised_only_as_the_answer_to_the_request() -> None:
    assert created_task(CREATED, 3) == ("up-1", 5000)
    assert created_task(CREATED, 4) is None
    assert created_task({**CREATED, "result": {"resultType": "complete", "taskId": "x"}}, 3) is None
    assert created_task({"id": 3, "result": {"resultType": "task", "taskId": "x", "ttlMs": None}}, 3) == ("x", None)
    assert created_task({"id": 3, "result": {"resultType": "task", "taskId": 7}}, 3) is None
    assert created_task({"id": 3, "error": {"code": 1}}, 3) is None


@pytest.fixture
def routes(redis: aioredis.Redis, key_prefix: str) -> TaskRoutes:
    return TaskRoutes(redis, Keys(key_prefix), default_ttl_ms=60_000, max_line=1 << 16)


async def test_route_binds_instance_principal_and_pool(
    routes: TaskRoutes, redis: aioredis.Redis, key_prefix: str
) -> None:
    await routes.record_json(json.dumps(CREATED).encode(), 3, Route("http://u2/mcp", "alice", "default"))
    assert 0 < await redis.pttl(Keys(key_prefix).task_route("up-1")) <= 5000
    assert await routes.instance_for({"taskId": "up-1"}, "alice", "default") == "http://u2/mcp"
    assert await routes.instance_for({"taskId": "never-seen"}, "alice", "default") is None
    for principal, pool in (("bob", "default"), ("", "default"), ("alice", "other")):
        with pytest.raises(errors.InvalidParams):
            await routes.instance_for({"taskId": "up-1"}, principal, pool)
    await routes.record_json(b"not json", 3, Route("x", "", "default"))  # relayed as is, nothing stored


async def test_route_is_stored_before_the_chunk_that_completes_the_answer(
    routes: TaskRoutes, redis: aioredis.Redis, key_prefix: str
) -> None:
    event = f"event: message\ndata: {json.dumps({**CREATED, 'result': {**CREATED['result'], 'ttlMs': None}})}\n\n"
    half = len(event) // 2

    async def upstream() -> AsyncIterator[bytes]:
        yield b": comment\n\n"
        yield event[:half].encode()
        yield event[half:].encode()

    key = Keys(key_prefix).task_route("up-1")
    seen = []
    async for chunk in routes.record_stream(upstream(), 3, Route("http://u1/mcp", "", "default")):
        seen.append((chunk, bool(await redis.exists(key))))
    assert [stored for _, stored in seen] == [False, False, True]
    assert 0 < await redis.pttl(key) <= 60_000  # ttlMs null: the gateway's default
