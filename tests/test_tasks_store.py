"""Task records in real Redis: TTL from creation, terminal-once, owner fencing, partial answers."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from gateway.store.keys import Keys
from gateway.tasks.record import TaskRecord
from gateway.tasks.store import APPLIED, MISSING, REFUSED, TaskStore


def new_record(task_id: str = "a" * 32, ttl_ms: int = 60_000) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        status="working",
        principal="alice",
        pool="default",
        tool="slow",
        owner="r1",
        created=1000,
        updated=1000,
        ttl_ms=ttl_ms,
        poll_ms=500,
    )


async def test_create_load_and_ttl_from_creation(redis: aioredis.Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    store = TaskStore(redis, keys)
    await store.create(new_record(ttl_ms=30_000))
    loaded = await store.load("a" * 32)
    assert loaded is not None and loaded.status == "working" and loaded.principal == "alice"
    assert 0 < await redis.pttl(keys.task("a" * 32)) <= 30_000
    assert await store.load("b" * 32) is None
    assert keys.task("a" * 32) == f"{key_prefix}:{{task:{'a' * 32}}}:task"


async def test_terminal_status_is_final_and_owner_fences(redis: aioredis.Redis, key_prefix: str) -> None:
    store = TaskStore(redis, Keys(key_prefix))
    await store.create(new_record())
    assert await store.transition("a" * 32, 2000, {"message": "half"}, owner="r2") == REFUSED
    assert await store.transition("a" * 32, 2000, {"message": "half"}, owner="r1") == APPLIED
    assert await store.transition("a" * 32, 3000, {"status": "cancelled"}) == APPLIED
    late = {"status": "completed", "result": json.dumps({"content": []})}
    assert await store.transition("a" * 32, 4000, late, owner="r1") == REFUSED
    record = await store.load("a" * 32)
    assert record is not None and record.status == "cancelled" and record.result is None
    assert record.updated == 3000 and record.message == "half"
    assert await store.transition("b" * 32, 1, {"status": "failed"}) == MISSING
    assert not await redis.exists(Keys(key_prefix).task("b" * 32))  # never re-created by a late write


async def test_partial_answers_keep_input_required(redis: aioredis.Redis, key_prefix: str) -> None:
    store = TaskStore(redis, Keys(key_prefix))
    await store.create(new_record())
    assert await store.answer("a" * 32, 1500, {"1.x": "{}"}) == REFUSED  # not asking for input
    inputs = {"1.name": json.dumps({"method": "elicitation/create"}), "1.ok": json.dumps({"method": "e"})}
    assert await store.ask("a" * 32, 2000, "r1", inputs, "state-1", 1) == APPLIED
    assert await store.answer("a" * 32, 2100, {"1.name": json.dumps({"action": "accept"}), "9.zz": "{}"}) == APPLIED
    record = await store.load("a" * 32)
    assert record is not None and record.status == "input_required"
    assert set(record.inputs) == {"1.ok"} and set(record.answers) == {"1.name"} and record.state == "state-1"
    assert await store.answer("a" * 32, 2200, {"1.ok": json.dumps({"action": "accept"})}) == APPLIED
    record = await store.load("a" * 32)
    assert record is not None and record.status == "working" and not record.inputs
    assert set(record.answers) == {"1.name", "1.ok"}
    await store.consume_answers("a" * 32, list(record.answers))
    record = await store.load("a" * 32)
    assert record is not None and not record.answers
    # the next round replaces the previous round's requests; a terminal status drops them
    assert await store.ask("a" * 32, 2300, "r1", {"2.more": "{}"}, None, 2) == APPLIED
    assert await store.transition("a" * 32, 2400, {"status": "cancelled"}, clear_inputs=True) == APPLIED
    record = await store.load("a" * 32)
    assert record is not None and not record.inputs and record.round == 2
