"""The task surface against real Redis, with a stub runner and liveness: negotiation, errors in
the extension's order, principal binding, orphaned tasks failed on read, cancel and update acks."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.metrics import Metrics
from gateway.store.keys import Keys
from gateway.tasks import protocol
from gateway.tasks.config import parse_task_tools
from gateway.tasks.runner import Job
from gateway.tasks.service import Call, TaskService, TaskSettings
from gateway.tasks.store import TaskStore
from gateway.wire.protocol import Message

EXT: dict[str, Any] = {"_meta": {protocol.CLIENT_CAPABILITIES: {"extensions": {protocol.EXTENSION: {}}}}}


class StubRunner:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def start(self, job: Job) -> None:
        self.jobs.append(job)


class StubLiveness:
    def __init__(self) -> None:
        self.replica_id = "me"
        self.dead: set[str] = set()

    async def is_alive(self, replica_id: str) -> bool:
        return replica_id not in self.dead


@pytest.fixture
def parts(redis: aioredis.Redis, key_prefix: str) -> tuple[TaskService, StubRunner, StubLiveness, TaskStore]:
    store = TaskStore(redis, Keys(key_prefix))
    runner, liveness = StubRunner(), StubLiveness()
    service = TaskService(
        tools=parse_task_tools(["default=slow*,deploy:required"], ["default", "plain"]),
        store=store,
        runner=runner,  # type: ignore[arg-type]
        liveness=liveness,
        settings=TaskSettings(ttl_ms=60_000, poll_ms=250),
        metrics=Metrics(),
    )
    return service, runner, liveness, store


def call(method: str, params: dict[str, Any], principal: str = "", pool: str = "default", token: str = "t1") -> Call:
    message = Message({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    headers = {"MCP-Protocol-Version": "2026-07-28", "Authorization": f"Bearer {token}"}
    return Call(pool, message, principal, lambda: "http://up/mcp", headers, frozenset({"authorization"}))


async def create(service: TaskService, principal: str = "") -> str:
    created = await service.intercept(call("tools/call", {"name": "slow_compute", **EXT}, principal))
    assert created is not None and created["resultType"] == "task" and created["status"] == "working"
    return str(created["taskId"])


async def test_task_tool_with_the_extension_becomes_a_task(parts: Any) -> None:
    service, runner, _, _ = parts
    task_id = await create(service)
    assert [j.task_id for j in runner.jobs] == [task_id] and runner.jobs[0].instance == "http://up/mcp"
    got = await service.intercept(call("tasks/get", {"taskId": task_id, **EXT}))
    assert got is not None and got["resultType"] == "complete" and got["taskId"] == task_id


async def test_without_the_extension_optional_is_plain_and_required_is_32021(parts: Any) -> None:
    service, runner, _, _ = parts
    assert await service.intercept(call("tools/call", {"name": "slow_compute"})) is None
    with pytest.raises(errors.MissingCapability) as caught:
        await service.intercept(call("tools/call", {"name": "deploy"}))
    assert "deploy" in caught.value.message
    assert await service.intercept(call("tools/call", {"name": "greet", **EXT})) is None  # not a task tool
    assert await service.intercept(call("tools/call", {"name": "slow_compute", **EXT}, pool="plain")) is None
    assert await service.intercept(call("tools/list", {})) is None
    assert runner.jobs == []


@pytest.mark.parametrize(
    ("method", "params", "error"),
    [
        ("tasks/result", {"taskId": "x", **EXT}, errors.MethodNotFound),
        ("tasks/list", {}, errors.MethodNotFound),
        ("tasks/other", EXT, errors.MethodNotFound),
        ("tasks/get", {"taskId": "x"}, errors.MissingCapability),
        ("tasks/cancel", {"taskId": "x"}, errors.MissingCapability),
        ("tasks/update", {"taskId": "x", "inputResponses": {}}, errors.MissingCapability),
        ("tasks/get", {"taskId": "x" * 32, **EXT}, errors.InvalidParams),
        ("tasks/get", {"taskId": 5, **EXT}, errors.InvalidParams),
    ],
)
async def test_errors_in_the_extensions_order(parts: Any, method: str, params: dict[str, Any], error: type) -> None:
    service = parts[0]
    with pytest.raises(error):
        await service.intercept(call(method, params))


async def test_a_task_is_visible_to_its_principal_only(parts: Any) -> None:
    service = parts[0]
    task_id = await create(service, principal="iss|alice")
    assert await service.intercept(call("tasks/get", {"taskId": task_id, **EXT}, "iss|alice")) is not None
    for other in ("iss|bob", ""):
        for method in ("tasks/get", "tasks/cancel", "tasks/update"):
            with pytest.raises(errors.InvalidParams):
                await service.intercept(call(method, {"taskId": task_id, "inputResponses": {}, **EXT}, other))


async def test_an_orphaned_task_fails_on_read_and_says_why(parts: Any) -> None:
    service, _, liveness, store = parts
    task_id = await create(service)
    liveness.dead.add("me")
    got = await service.intercept(call("tasks/get", {"taskId": task_id, **EXT}))
    assert got is not None and got["status"] == "failed"
    assert got["error"]["code"] == errors.INTERNAL_ERROR and "re-attached" in got["error"]["message"]
    record = await store.load(task_id)
    assert record is not None and record.status == "failed"


async def test_cancel_is_an_empty_ack_and_idempotent(parts: Any) -> None:
    service, _, _, store = parts
    task_id = await create(service)
    for _ in range(2):
        ack = await service.intercept(call("tasks/cancel", {"taskId": task_id, **EXT}))
        assert ack == {"resultType": "complete"}
    record = await store.load(task_id)
    assert record is not None and record.status == "cancelled" and record.message


async def test_update_acks_and_validates(parts: Any) -> None:
    service, _, _, store = parts
    task_id = await create(service)
    await store.ask(task_id, 1, "me", {"1.ok": "{}"}, None, 1)
    with pytest.raises(errors.InvalidParams):
        await service.intercept(call("tasks/update", {"taskId": task_id, "inputResponses": [], **EXT}))
    ack = await service.intercept(call("tasks/update", {"taskId": task_id, "inputResponses": {"1.ok": {}}, **EXT}))
    assert ack == {"resultType": "complete"}
    record = await store.load(task_id)
    assert record is not None and record.status == "working"


async def test_sync_input_tool_forwards_the_first_round_and_tasks_the_answered_one(
    redis: aioredis.Redis, key_prefix: str
) -> None:
    runner = StubRunner()
    service = TaskService(
        tools=parse_task_tools(["default=ask_first"], ["default"], ["default=ask_first"]),
        store=TaskStore(redis, Keys(key_prefix)),
        runner=runner,  # type: ignore[arg-type]
        liveness=StubLiveness(),
        settings=TaskSettings(ttl_ms=60_000, poll_ms=250),
        metrics=Metrics(),
    )
    assert await service.intercept(call("tools/call", {"name": "ask_first", **EXT})) is None
    answered = {"name": "ask_first", "inputResponses": {"user_name": {"action": "accept"}}, **EXT}
    created = await service.intercept(call("tools/call", answered))
    assert created is not None and created["resultType"] == "task"
    assert runner.jobs[0].params["inputResponses"] == {"user_name": {"action": "accept"}}


async def test_credentials_are_never_stored(parts: Any, redis: aioredis.Redis) -> None:
    service, runner, _, store = parts
    task_id = await create(service)
    record = await store.load(task_id)
    assert record is not None and json.loads(record.headers) == {"MCP-Protocol-Version": "2026-07-28"}
    assert runner.jobs[0].headers["Authorization"] == "Bearer t1"  # the runner has them, in memory


async def test_a_task_waiting_for_input_is_adopted_when_its_runner_dies(parts: Any) -> None:
    service, runner, liveness, store = parts
    task_id = await create(service)
    await store.ask(task_id, 1, "me", {"1.ok": "{}"}, "st", 1)
    liveness.dead.add("me")
    liveness.replica_id = "other"
    got = await service.intercept(call("tasks/get", {"taskId": task_id, **EXT}, token="t2"))
    assert got is not None and got["status"] == "input_required" and list(got["inputRequests"]) == ["1.ok"]
    adopted = runner.jobs[-1]
    assert adopted.task_id == task_id and adopted.resume_round == 1
    assert adopted.params["name"] == "slow_compute" and adopted.headers["Authorization"] == "Bearer t2"
    record = await store.load(task_id)
    assert record is not None and record.owner == "other"


async def test_all_answers_in_but_not_sent_is_adopted_a_call_in_flight_is_not(parts: Any) -> None:
    service, runner, liveness, store = parts
    waiting, in_flight = await create(service), await create(service)
    await store.ask(waiting, 1, "me", {"1.ok": "{}"}, None, 1)
    await store.answer(waiting, 2, {"1.ok": "{}"})  # working, answers filed, next round not sent
    liveness.dead.add("me")
    liveness.replica_id = "other"
    assert (await service.intercept(call("tasks/get", {"taskId": waiting, **EXT})) or {})["status"] == "working"
    assert runner.jobs[-1].task_id == waiting
    failed = await service.intercept(call("tasks/get", {"taskId": in_flight, **EXT}))
    assert failed is not None and failed["status"] == "failed"
