"""Tasks an upstream creates itself, through three replicas: each task id goes to the instance that
created it (affinity in Redis), and only for the principal that created it.

Upstream: two instances of `tests/servers/tasks_server.py` (in-memory tasks: the other instance does
not know a task, and answers -32602), as JSON and as SSE."""

from __future__ import annotations

import sys

import pytest

from tests.integration.conftest import StartGateways
from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port
from tests.integration.test_tasks import get, result, rpc
from tests.test_security import ISSUER, PUBLIC_PEM, token

TASKS_SERVER = REPO_ROOT / "tests" / "servers" / "tasks_server.py"


def start_task_upstreams(procs: ProcessGroup, sse: bool) -> list[str]:
    urls = []
    for name in ("t1", "t2"):
        port = free_port()
        argv = [sys.executable, str(TASKS_SERVER), "--port", str(port), "--name", name, *(["--sse"] if sse else [])]
        procs.start(f"tasks-{name}-{port}", argv).wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
        urls.append(f"http://127.0.0.1:{port}/mcp")
    return urls


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_each_task_goes_to_the_instance_that_created_it(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str, sse: bool
) -> None:
    gateways = gateway_cluster(3, {"default": start_task_upstreams(procs, sse)}, key_prefix)
    creators = set()
    for i in range(6):
        created = result(await rpc(gateways[i % 3].url, "tools/call", {"name": "work", "arguments": {}}))
        assert created["resultType"] == "task", created
        for gw in gateways:  # every replica, several times: round robin would hit the other instance
            task = result(await get(gw.url, created["taskId"]))
            assert task["status"] == "completed", task
            creators.add(task["result"]["content"][0]["text"])
        assert result(await rpc(gateways[0].url, "tasks/cancel", {"taskId": created["taskId"]})) == {
            "resultType": "complete"
        }
    assert creators == {"done by t1", "done by t2"}  # both instances created tasks


async def test_an_upstream_task_belongs_to_its_principal(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    auth = ["--auth-issuer", ISSUER, "--auth-public-key", PUBLIC_PEM, "--resource-url", "https://gw.example/mcp"]
    a, b, _ = gateway_cluster(3, {"default": start_task_upstreams(procs, sse=False)}, key_prefix, auth)
    alice, bob = token("alice"), token("bob")
    created = result(await rpc(a.url, "tools/call", {"name": "work", "arguments": {}}, auth=alice))
    task_id = created["taskId"]
    for method in ("tasks/get", "tasks/cancel"):
        foreign = await rpc(b.url, method, {"taskId": task_id}, auth=bob)
        assert foreign["error"]["code"] == -32602, foreign
    assert result(await get(b.url, task_id, auth=alice))["status"] == "completed"
