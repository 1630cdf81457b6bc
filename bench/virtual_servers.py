"""`tools/list` and `tools/call` through virtual servers of 1, 2, 5 and 10 members against the plain
pool path, in the same run, on one replica.

    .venv/bin/python -m bench.virtual_servers [--n 300]

Starts one `bench.fast_upstream` (each member pool names it with its own query string, so every
member is a pool and an upstream session of its own) and one gateway replica on Redis at REDIS_URL
with pools m0..m9 and virtual servers v1, v2, v5, v10 (`--virtual-server vK=m0,...`), then times
sequential requests of one sessionful client per path. Figures only (a loaded machine moves them).
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

from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port

SIZES = (1, 2, 5, 10)
ROUNDS = 10
IDS = itertools.count(1)  # request ids are never reused within a session
VERSION = "2025-11-25"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def summary(samples: list[float]) -> str:
    samples.sort()
    return f"p50 {statistics.median(samples):.2f} ms, p99 {samples[max(0, int(len(samples) * 0.99) - 1)]:.2f} ms"


async def session(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    params = {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
    answer = await client.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
    answer.raise_for_status()
    headers = {**HEADERS, "Mcp-Session-Id": answer.headers["mcp-session-id"], "MCP-Protocol-Version": VERSION}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    (await client.post(url, json=note, headers=headers)).raise_for_status()
    return headers


async def timed(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int, message: dict[str, Any], into: list[float]
) -> None:
    for _ in range(n):
        started = time.perf_counter()
        answer = await client.post(url, json={**message, "id": next(IDS)}, headers=headers)
        body = answer.json()
        into.append((time.perf_counter() - started) * 1000)
        if "result" not in body:
            raise RuntimeError(f"{url}: {body}")


async def run(n: int) -> None:
    group = ProcessGroup(log_dir=REPO_ROOT / "bench" / "results" / "logs" / "virtual")
    try:
        port = free_port()
        group.start(f"upstream-{port}", [sys.executable, "-m", "bench.fast_upstream", "--port", str(port)]).wait_http(
            f"http://127.0.0.1:{port}/healthz", timeout=30
        )
        gw_port = free_port()
        argv = [sys.executable, "-m", "gateway", "--port", str(gw_port), "--log-format", "text", "--rate-limit", "0"]
        for i in range(max(SIZES)):
            argv += ["--upstream", f"m{i}=http://127.0.0.1:{port}/mcp?member={i}"]
        for size in SIZES:
            argv += ["--virtual-server", f"v{size}=" + ",".join(f"m{i}" for i in range(size))]
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        argv += ["--redis-url", redis_url, "--key-prefix", f"bench-virtual-{secrets.token_hex(3)}"]
        group.start(f"gateway-{gw_port}", argv).wait_http(f"http://127.0.0.1:{gw_port}/readyz", timeout=30)
        base = f"http://127.0.0.1:{gw_port}/mcp"
        listing = {"jsonrpc": "2.0", "method": "tools/list", "params": {}}
        paths = [("plain pool m0", "m0", "json"), *((f"virtual server of {k}", f"v{k}", "m0__json") for k in SIZES)]
        samples: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, _, _ in paths}
        async with httpx.AsyncClient(timeout=30, headers=HEADERS) as client:
            sessions = {path: await session(client, f"{base}/{path}") for _, path, _ in paths}
            # Rounds interleave the paths: a machine that gets busier part-way slows every path alike.
            for _ in range(ROUNDS):
                for label, path, tool in paths:
                    call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": tool, "arguments": {}}}
                    lists, calls = samples[label]
                    await timed(client, f"{base}/{path}", sessions[path], n // ROUNDS, listing, lists)
                    await timed(client, f"{base}/{path}", sessions[path], n // ROUNDS, call, calls)
        for label, (lists, calls) in samples.items():
            print(f"{label}: tools/list {summary(lists)}; tools/call {summary(calls)}")
    finally:
        group.stop_all()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    asyncio.run(run(parser.parse_args(argv).n))


if __name__ == "__main__":
    main()
