"""Gateway-served tasks with real processes: three replicas on Redis in front of the conformance
fixture (`interop/conformance_server.py`, plain tools, no tasks support of its own).

SIGKILL of the replica running a task, cancel while running (the upstream call is closed) and after
the end, input asked on one replica and answered on another, TTL expiry, principal binding."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.store.keys import Keys
from interop import harness
from tests.integration.conftest import GatewayProc, StartGateways
from tests.integration.procs import ProcessGroup
from tests.test_security import ISSUER, PUBLIC_PEM, token

MODERN = "2026-07-28"
EXT = "io.modelcontextprotocol/tasks"
TASK_TOOLS = ["--task-tools", "default=slow_compute,confirm_delete,test_tool_with_progress,failing_job:required"]
NAME_PARAM = {"tools/call": "name", "tasks/get": "taskId", "tasks/cancel": "taskId", "tasks/update": "taskId"}


def rpc_body(method: str, params: dict[str, Any], *, tasks: bool = True) -> dict[str, Any]:
    caps: dict[str, Any] = {"extensions": {EXT: {}}} if tasks else {}
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": caps}
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}


async def rpc(
    url: str, method: str, params: dict[str, Any], *, tasks: bool = True, auth: str | None = None
) -> dict[str, Any]:
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
        "Mcp-Name": str(params[NAME_PARAM[method]]),
    }
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(url, json=rpc_body(method, params, tasks=tasks), headers=headers)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        lines = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        messages = [json.loads(line) for line in lines if line]
        return next(m for m in messages if "id" in m)
    message: dict[str, Any] = response.json()
    return message


def result(message: dict[str, Any]) -> dict[str, Any]:
    assert "result" in message, message
    value: dict[str, Any] = message["result"]
    return value


async def start_task(url: str, tool: str, arguments: dict[str, Any], auth: str | None = None) -> str:
    created = result(await rpc(url, "tools/call", {"name": tool, "arguments": arguments}, auth=auth))
    assert created["resultType"] == "task", created
    return str(created["taskId"])


async def get(url: str, task_id: str, auth: str | None = None) -> dict[str, Any]:
    return await rpc(url, "tasks/get", {"taskId": task_id}, auth=auth)


async def until(url: str, task_id: str, done: Sequence[str], timeout: float = 20.0) -> dict[str, Any]:
    """Poll tasks/get until the status is one of `done` (the deadline only bounds a broken run)."""
    deadline = time.monotonic() + timeout
    while True:
        task = result(await get(url, task_id))
        if task["status"] in done or time.monotonic() > deadline:
            return task
        await asyncio.sleep(0.1)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> bool:
    """True once `check()` holds; False when the deadline (which only bounds a broken run) passes."""
    deadline = time.monotonic() + timeout
    for _ in itertools.count():
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


@pytest.fixture
def fixture_url(procs: ProcessGroup) -> str:
    return harness.start_fixture(procs)


def cluster(gateway_cluster: StartGateways, upstream: str, key_prefix: str, *extra: str) -> list[GatewayProc]:
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, [*TASK_TOOLS, *extra])
    for gw in gateways:
        gw.proc.wait_http(f"{gw.base_url}/readyz", timeout=20)
    return gateways


async def test_sigkill_of_the_runner_fails_the_task_on_every_other_replica(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    a, b, c = cluster(gateway_cluster, fixture_url, key_prefix)
    task_id = await start_task(a.url, "slow_compute", {"seconds": 60, "label": "killed"})
    assert result(await get(b.url, task_id))["status"] == "working"
    a.proc.kill()
    task = await until(b.url, task_id, ("failed", "completed", "cancelled"))
    assert task["status"] == "failed", task
    assert task["error"]["code"] == -32603 and "re-attached" in task["error"]["message"]
    assert "result" not in task
    assert result(await get(c.url, task_id)) == task  # the same terminal record on every replica


async def test_a_task_waiting_for_input_outlives_its_runner(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    a, b, c = cluster(gateway_cluster, fixture_url, key_prefix)
    task_id = await start_task(a.url, "confirm_delete", {"filename": "kept.txt"})
    asking = await until(b.url, task_id, ("input_required", "failed", "completed"))
    assert asking["status"] == "input_required"
    a.proc.kill()
    await asyncio.sleep(1.5)  # the killed replica's liveness key (PX 1 s) lapses
    still = result(await get(b.url, task_id))  # b adopts the task: no upstream call was open
    assert still["status"] == "input_required" and still["inputRequests"] == asking["inputRequests"]
    answer = {"1.confirm": {"action": "accept", "content": {"confirm": False}}}
    assert result(await rpc(c.url, "tasks/update", {"taskId": task_id, "inputResponses": answer}))
    done = await until(c.url, task_id, ("completed", "failed", "cancelled"))
    assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "kept kept.txt", done


async def test_sigterm_of_the_runner_fails_its_task_before_exit(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    a, b, _ = cluster(gateway_cluster, fixture_url, key_prefix)
    task_id = await start_task(a.url, "slow_compute", {"seconds": 60, "label": "drained"})
    a.proc.terminate()
    assert a.proc.wait(timeout=30) == 0
    task = result(await get(b.url, task_id))  # terminal as soon as the replica is gone
    assert task["status"] == "failed" and "shut down" in task["error"]["message"], task


async def test_cancel_while_running_closes_the_upstream_call(
    procs: ProcessGroup, fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    a, b, c = cluster(gateway_cluster, fixture_url, key_prefix)
    task_id = await start_task(a.url, "slow_compute", {"seconds": 60, "label": "cancel-me"})
    assert result(await rpc(b.url, "tasks/cancel", {"taskId": task_id})) == {"resultType": "complete"}
    task = result(await get(c.url, task_id))
    assert task["status"] == "cancelled" and "result" not in task
    fixture = next(p for p in procs.procs if p.name.startswith("conformance-fixture"))

    async def upstream_cancelled() -> bool:
        return "slow_compute cancelled: cancel-me" in fixture.log_tail(200)

    assert await eventually(upstream_cancelled), fixture.log_tail(50)
    assert result(await get(a.url, task_id))["status"] == "cancelled"  # the runner wrote nothing after it


async def test_cancel_after_the_end_acks_and_keeps_the_result(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    a, b, _ = cluster(gateway_cluster, fixture_url, key_prefix)
    task_id = await start_task(a.url, "slow_compute", {"seconds": 0, "label": "quick"})
    done = await until(b.url, task_id, ("completed", "failed", "cancelled"))
    assert done["status"] == "completed" and "computed quick" in done["result"]["content"][0]["text"]
    assert result(await rpc(b.url, "tasks/cancel", {"taskId": task_id})) == {"resultType": "complete"}
    assert result(await get(a.url, task_id)) == done


async def test_input_asked_on_one_replica_is_answered_on_another(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    a, b, c = cluster(gateway_cluster, fixture_url, key_prefix)
    task_id = await start_task(a.url, "confirm_delete", {"filename": "x.txt"})
    asking = await until(b.url, task_id, ("input_required", "failed", "completed"))
    assert asking["status"] == "input_required" and list(asking["inputRequests"]) == ["1.confirm"]
    assert asking["inputRequests"]["1.confirm"]["method"] == "elicitation/create"
    answer = {"1.confirm": {"action": "accept", "content": {"confirm": True}}}
    ack = await rpc(c.url, "tasks/update", {"taskId": task_id, "inputResponses": answer})
    assert result(ack) == {"resultType": "complete"}
    done = await until(b.url, task_id, ("completed", "failed", "cancelled"))
    assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "deleted x.txt"


async def test_progress_becomes_the_status_message_and_required_tools_need_the_extension(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    a, b, _ = cluster(gateway_cluster, fixture_url, key_prefix)
    task_id = await start_task(a.url, "test_tool_with_progress", {})
    done = await until(b.url, task_id, ("completed", "failed", "cancelled"))
    assert done["status"] == "completed" and done["statusMessage"] == "Completed step 100 of 100"  # the last one
    refused = await rpc(a.url, "tools/call", {"name": "failing_job", "arguments": {}}, tasks=False)
    assert refused["error"]["code"] == -32021
    assert refused["error"]["data"] == {"requiredCapabilities": {"extensions": {EXT: {}}}}
    plain = result(await rpc(a.url, "tools/call", {"name": "slow_compute", "arguments": {}}, tasks=False))
    assert plain["resultType"] == "complete" and "taskId" not in plain


async def test_ttl_is_honoured_then_the_task_is_gone(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str, redis: aioredis.Redis
) -> None:
    a, b, _ = cluster(gateway_cluster, fixture_url, key_prefix, "--task-ttl", "2")
    task_id = await start_task(a.url, "slow_compute", {"seconds": 0})
    key = Keys(key_prefix).task(task_id)
    assert 0 < await redis.pttl(key) <= 2000  # expires at createdAt + ttlMs, not before
    done = await until(b.url, task_id, ("completed",))
    assert done["ttlMs"] == 2000 and done["status"] == "completed"

    async def expired() -> bool:
        return not await redis.exists(key)

    assert await eventually(expired)
    gone = await get(b.url, task_id)
    assert gone["error"]["code"] == -32602, gone


async def test_a_task_belongs_to_its_principal(
    fixture_url: str, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    auth = ["--auth-issuer", ISSUER, "--auth-public-key", PUBLIC_PEM, "--resource-url", "https://gw.example/mcp"]
    a, b, _ = cluster(gateway_cluster, fixture_url, key_prefix, *auth)
    alice, bob = token("alice"), token("bob")
    task_id = await start_task(a.url, "slow_compute", {"seconds": 30}, auth=alice)
    for method in ("tasks/get", "tasks/cancel"):
        foreign = await rpc(b.url, method, {"taskId": task_id}, auth=bob)
        assert foreign["error"]["code"] == -32602, foreign
    assert result(await get(b.url, task_id, auth=alice))["status"] == "working"
    assert result(await rpc(b.url, "tasks/cancel", {"taskId": task_id}, auth=alice)) == {"resultType": "complete"}
