"""Latency of a call bridged from a 2025 client onto a 2026-07-28 upstream against the same call made
natively at 2026-07-28, through the same gateway replica to the same upstream, in one run.

    .venv/bin/python -m bench.bridging [--n 300]

Starts the 2026-07-28-only SDK server (`tests/servers/sdk_2026_server.py`) and one gateway replica on
Redis at REDIS_URL with two pools on that one upstream: `native` (a 2026-07-28 client's requests
pass through statelessly) and `bridged` (`--upstream-era bridged=2026`: a 2025-11-25 session the
gateway owns). Then, one call at a time, in alternating rounds so that machine noise falls on both:
`echo` direct (a 2026-07-28 client), through `native`, and through `bridged` (JSON answers);
`slow_count(steps=1)` (one progress event: the bridged call goes through the event log). Figures
only (a loaded machine moves them); nothing asserts them.
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
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
SERVER = REPO_ROOT / "tests" / "servers" / "sdk_2026_server.py"
ACCEPT = "application/json, text/event-stream"
ROUNDS = 5


def modern(tool: str, arguments: dict[str, Any], progress: bool) -> tuple[dict[str, Any], dict[str, str]]:
    meta: dict[str, Any] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    if progress:
        meta["progressToken"] = "p"
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": meta},
    }
    headers = {"Accept": ACCEPT, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call", "Mcp-Name": tool}
    return body, headers


async def legacy_session(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
    response = await client.post(
        url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, headers={"Accept": ACCEPT}
    )
    headers = {"Accept": ACCEPT, "MCP-Protocol-Version": LEGACY, "Mcp-Session-Id": response.headers["mcp-session-id"]}
    notified = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await client.post(url, json=notified, headers=headers)).status_code == 202
    return headers


async def call(
    client: httpx.AsyncClient, ids: Iterator[int], url: str, body: dict[str, Any], headers: dict[str, str]
) -> float:
    body = {**body, "id": next(ids)}  # a session's request ids must not repeat (basic §Requests)
    started = time.perf_counter()
    async with client.stream("POST", url, json=body, headers=headers) as response:
        payload = await response.aread()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200 or b'"result"' not in payload:
        raise RuntimeError(f"{url}: {response.status_code} {payload[:200]!r}")
    return elapsed


def summary(samples: list[float]) -> str:
    samples.sort()
    return f"p50 {statistics.median(samples):6.2f} ms, p90 {samples[int(len(samples) * 0.9) - 1]:6.2f} ms"


def start(group: ProcessGroup, name: str, argv: list[str], ready: str) -> int:
    port = free_port()
    group.start(f"{name}-{port}", [*argv, "--port", str(port)]).wait_http(
        f"http://127.0.0.1:{port}/{ready}", timeout=30
    )
    return port


async def run(n: int) -> None:
    group = ProcessGroup(log_dir=REPO_ROOT / "bench" / "results" / "logs" / "bridging")
    try:
        upstream = f"http://127.0.0.1:{start(group, 'sdk2026', [sys.executable, str(SERVER)], 'healthz')}/mcp"
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        argv = [sys.executable, "-m", "gateway", "--redis-url", redis_url, "--log-level", "warning"]
        argv += ["--upstream", f"native={upstream}", "--upstream", f"bridged={upstream}"]
        argv += ["--upstream-era", "bridged=2026", "--key-prefix", f"bench-bridge-{secrets.token_hex(3)}"]
        gateway = f"http://127.0.0.1:{start(group, 'gateway', argv, 'readyz')}/mcp"
        ids = itertools.count(1)
        async with httpx.AsyncClient(timeout=30) as client:
            bridged_headers = await legacy_session(client, f"{gateway}/bridged")
            for tool, arguments, progress in (("echo", {"text": "x"}, False), ("slow_count", {"steps": 1}, True)):
                body, headers = modern(tool, arguments, progress)
                legacy_body = {**body, "params": {k: v for k, v in body["params"].items() if k != "_meta"}}
                if progress:
                    legacy_body["params"]["_meta"] = {"progressToken": "p"}
                targets = {
                    "direct (2026-07-28 client)": (upstream, body, headers),
                    "gateway, native 2026-07-28": (f"{gateway}/native", body, headers),
                    "gateway, bridged 2025-11-25": (f"{gateway}/bridged", legacy_body, bridged_headers),
                }
                samples: dict[str, list[float]] = {label: [] for label in targets}
                for target in targets.values():  # warm-up (and the bridged replica learns the tools)
                    for _ in range(5):
                        await call(client, ids, *target)
                for _, (label, target) in itertools.product(range(ROUNDS), targets.items()):
                    for _ in range(n // ROUNDS):
                        samples[label].append(await call(client, ids, *target))
                print(f"tools/call {tool}{' with progress' if progress else ''}:")
                for label, values in samples.items():
                    print(f"  {label:30s} {summary(values)}")
    finally:
        group.stop_all()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="calls per target and tool (split over 5 rounds)")
    asyncio.run(run(parser.parse_args(argv).n))


if __name__ == "__main__":
    main()
