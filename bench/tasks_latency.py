"""Latency of gateway-served tasks against the same tool called plainly, on one replica.

    .venv/bin/python -m bench.tasks_latency [--n 200]

Starts the conformance fixture (`interop/conformance_server.py`) and one gateway replica serving its
`slow_compute` as a task (`--task-tools default=slow_compute`) on Redis at REDIS_URL, then times:
a plain tool direct and through the gateway, `slow_compute(0)` synchronous and as a task
(CreateTaskResult), `tasks/get`, and create -> `completed` seen by a client polling every 5 ms.
Figures only (a loaded machine moves them); nothing asserts them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bench.topology import NO_CLIENT_LIMITS
from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port

MODERN = "2026-07-28"
FIXTURE = REPO_ROOT / "interop" / "conformance_server.py"
EXT = "io.modelcontextprotocol/tasks"


def request(method: str, params: dict[str, Any], *, tasks: bool) -> dict[str, Any]:
    caps: dict[str, Any] = {"extensions": {EXT: {}}} if tasks else {}
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": caps}
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}


def headers(method: str, name: str) -> dict[str, str]:
    return {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
        "Mcp-Name": name,
    }


async def post(client: httpx.AsyncClient, url: str, method: str, params: dict[str, Any], name: str, tasks: bool) -> Any:
    response = await client.post(url, json=request(method, params, tasks=tasks), headers=headers(method, name))
    return response.json()


def summary(samples: list[float]) -> str:
    samples.sort()
    return f"p50 {statistics.median(samples):.2f} ms, p99 {samples[max(0, int(len(samples) * 0.99) - 1)]:.2f} ms"


async def timed(client: httpx.AsyncClient, n: int, *args: Any) -> tuple[str, Any]:
    samples, last = [], None
    for _ in range(n):
        started = time.perf_counter()
        last = await post(client, *args)
        samples.append((time.perf_counter() - started) * 1000)
    return summary(samples), last


async def until_completed(client: httpx.AsyncClient, url: str, task_id: str) -> None:
    for _ in itertools.count():
        task = await post(client, url, "tasks/get", {"taskId": task_id}, task_id, True)
        if task["result"]["status"] == "completed":
            return
        await asyncio.sleep(0.005)


def start(group: ProcessGroup, name: str, argv: list[str]) -> str:
    port = free_port()
    group.start(f"{name}-{port}", [*argv, "--port", str(port)]).wait_http(
        f"http://127.0.0.1:{port}/{'healthz' if name == 'fixture' else 'readyz'}", timeout=30
    )
    return f"http://127.0.0.1:{port}/mcp"


async def run(n: int) -> None:
    group = ProcessGroup(log_dir=REPO_ROOT / "bench" / "results" / "logs" / "tasks")
    try:
        fixture = start(group, "fixture", [sys.executable, str(FIXTURE)])
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        gateway = start(
            group,
            "gateway",
            [
                *(sys.executable, "-m", "gateway", "--upstream", f"default={fixture}", "--redis-url", redis_url),
                *("--key-prefix", f"bench-tasks-{secrets.token_hex(3)}", "--task-tools", "default=slow_compute"),
                *NO_CLIENT_LIMITS,
                *("--metrics-port", "0"),
            ],
        )
        greet = ("tools/call", {"name": "greet", "arguments": {"name": "x"}}, "greet")
        quick = ("tools/call", {"name": "slow_compute", "arguments": {"seconds": 0}}, "slow_compute")
        async with httpx.AsyncClient(timeout=30) as client:
            for label, args in (
                ("plain tool, direct", (fixture, *greet, False)),
                ("plain tool, through the gateway", (gateway, *greet, False)),
                ("slow_compute(0) synchronous, direct", (fixture, *quick, False)),
                ("slow_compute(0) synchronous, through the gateway (no extension)", (gateway, *quick, False)),
                ("slow_compute(0) as a task: CreateTaskResult", (gateway, *quick, True)),
            ):
                figures, last = await timed(client, n, *args)
                print(f"{label}: {figures}")
            task_id = last["result"]["taskId"]
            figures, _ = await timed(client, n, gateway, "tasks/get", {"taskId": task_id}, task_id, True)
            print(f"tasks/get: {figures}")
            rounds = []
            for _ in range(max(10, n // 4)):
                started = time.perf_counter()
                task_id = (await post(client, gateway, *quick, True))["result"]["taskId"]
                await until_completed(client, gateway, task_id)
                rounds.append((time.perf_counter() - started) * 1000)
            print(f"create -> completed seen (polling every 5 ms): {summary(rounds)}")
    finally:
        group.stop_all()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    asyncio.run(run(parser.parse_args(argv).n))


if __name__ == "__main__":
    main()
