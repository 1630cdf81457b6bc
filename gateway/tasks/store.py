"""Task records in Redis: one hash per task (`Keys.task`), expiring at creation + TTL.

Every change is a small Lua script on that one key, so it is atomic and Cluster-safe: a terminal
status is final (a late runner, a cancel and an orphan check cannot overwrite each other), and a
runner only writes while it still owns the task (fencing, like the stream leases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys
from gateway.tasks.record import ANSWER_PREFIX, INPUT_PREFIX, TaskRecord

APPLIED, REFUSED, MISSING = 1, 0, -1

# KEYS[1] task; ARGV: expected owner ('' = anyone), now ms, '1' to drop inputs/answers, field/value...
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return 0 end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if ARGV[3] == '1' then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(f, 1, 3) == 'in:' or string.sub(f, 1, 4) == 'ans:' then redis.call('HDEL', KEYS[1], f) end
  end
end
redis.call('HSET', KEYS[1], 'updated', ARGV[2], unpack(ARGV, 4))
return 1
"""

# KEYS[1] task; ARGV: now ms, key/JSON pairs. Keys not outstanding are ignored (tasks §Task Update).
_ANSWER = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status ~= 'input_required' then return 0 end
for i = 2, #ARGV, 2 do
  if redis.call('HDEL', KEYS[1], 'in:' .. ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], 'ans:' .. ARGV[i], ARGV[i + 1])
  end
end
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 3) == 'in:' then
    redis.call('HSET', KEYS[1], 'updated', ARGV[1])
    return 1
  end
end
redis.call('HSET', KEYS[1], 'status', 'working', 'updated', ARGV[1])
return 1
"""


class TaskStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._transition = Script(redis, _TRANSITION)
        self._answer = Script(redis, _ANSWER)

    async def create(self, record: TaskRecord) -> None:
        """Durable before the CreateTaskResult is sent (tasks §Task Creation): one MULTI round trip."""
        key = self._keys.task(record.id)
        with translated():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=record.to_redis())  # type: ignore[arg-type]
                pipe.pexpire(key, record.ttl_ms)  # tasks §Task Polling: the TTL runs from creation
                await pipe.execute()

    async def load(self, task_id: str) -> TaskRecord | None:
        with translated():
            raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.task(task_id))  # type: ignore[assignment]
        return TaskRecord.from_redis(task_id, raw) if raw else None

    async def transition(
        self, task_id: str, now: int, fields: Mapping[str, str], *, owner: str = "", clear_inputs: bool = False
    ) -> int:
        """Apply `fields` unless the task is terminal, gone, or (with `owner`) owned by someone else."""
        args: list[Any] = [owner, now, "1" if clear_inputs else "0"]
        for name, value in fields.items():
            args += [name, value]
        with translated():
            return int(await self._transition(keys=[self._keys.task(task_id)], args=args))

    async def ask(
        self, task_id: str, now: int, owner: str, inputs: Mapping[str, str], state: str | None, round_: int
    ) -> int:
        """The upstream asked for input: outstanding requests replace the previous round's."""
        fields = {"status": "input_required", "round": str(round_), "state": state or ""}
        fields.update({INPUT_PREFIX + k: v for k, v in inputs.items()})
        return await self.transition(task_id, now, fields, owner=owner, clear_inputs=True)

    async def answer(self, task_id: str, now: int, responses: Mapping[str, str]) -> int:
        args: list[Any] = [now]
        for key, value in responses.items():
            args += [key, value]
        with translated():
            return int(await self._answer(keys=[self._keys.task(task_id)], args=args))

    async def consume_answers(self, task_id: str, keys: list[str]) -> None:
        """The runner sent this round's answers upstream; they are not needed again."""
        if keys:
            with translated():
                await self._redis.hdel(self._keys.task(task_id), *(ANSWER_PREFIX + k for k in keys))
