"""A 2026-07-28 call bridged to a 2025-only upstream against the same call native, in one run.

    .venv/bin/python -m bench.bridge_latency [--n 300] [--clients 1000]

Starts the Python SDK test server twice: as it is (it speaks 2026-07-28: native) and behind the
wrapper that refuses 2026 requests (`tests/servers/sdk_2025_server.py`: bridged), and one gateway
replica with a pool for each on Redis at REDIS_URL. Times `tools/call echo` (JSON answer) and
`slow_count(steps=1, delay=0)` (SSE answer with one progress), sequentially, through each pool,
and counts the upstream sessions the bridge opened (`GET /sessions` of the 2025 server): one for
every call of one principal with the same capabilities. Then, with gateway auth on (the test
suite's signing key), `--clients` calls of one principal and one call of each of `--clients`
principals, 20 at a time: the upstream sessions each opened. Figures only; nothing asserts them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port
from tests.test_security import ISSUER, PUBLIC_PEM, token

MODERN = "2026-07-28"
SERVERS = REPO_ROOT / "tests" / "servers"


def body(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    params = {"name": name, "arguments": arguments, "_meta": {**meta, "progressToken": 1}}
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}


def headers(name: str) -> dict[str, str]:
    return {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
    }


def summary(samples: list[float]) -> str:
    samples.sort()
    return f"p50 {statistics.median(samples):.2f} ms, p99 {samples[max(0, int(len(samples) * 0.99) - 1)]:.2f} ms"


async def session_headers(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    """A 2025-11-25 session of our own on the 2025-only server (the upstream's own cost, no gateway)."""
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
    accept = {"Accept": "application/json, text/event-stream"}
    response = await client.post(url, json=init, headers=accept)
    session = {**accept, "Mcp-Session-Id": response.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    await client.post(url, json=note, headers=session)
    return session


async def timed(
    client: httpx.AsyncClient, url: str, n: int, name: str, arguments: dict[str, Any], sent: dict[str, str] | None
) -> str:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.post(url, json=body(name, arguments), headers=sent or headers(name))
        assert response.status_code == 200 and b'"result"' in response.content, response.text
        samples.append((time.perf_counter() - started) * 1000)
    return summary(samples)


def start(group: ProcessGroup, name: str, argv: list[str], ready: str) -> str:
    port = free_port()
    group.start(f"{name}-{port}", [*argv, "--port", str(port)]).wait_http(
        f"http://127.0.0.1:{port}/{ready}", timeout=30
    )
    return f"http://127.0.0.1:{port}"


async def run(n: int, clients: int) -> None:
    group = ProcessGroup(log_dir=REPO_ROOT / "bench" / "results" / "logs" / "bridge")
    try:
        native = start(group, "native", [sys.executable, str(SERVERS / "sdk_server.py"), "--event-store"], "healthz")
        old = start(group, "old", [sys.executable, str(SERVERS / "sdk_2025_server.py"), "--event-store"], "healthz")
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        gateway = start(
            group,
            "gateway",
            [
                *(sys.executable, "-m", "gateway", "--redis-url", redis_url),
                *("--upstream", f"native={native}/mcp", "--upstream", f"bridged={old}/mcp"),
                *("--key-prefix", f"bench-bridge-{secrets.token_hex(3)}", "--response-cache", "false"),
            ],
            "readyz",
        )
        async with httpx.AsyncClient(timeout=30) as client:
            own = await session_headers(client, f"{old}/mcp")
            opened_before = (await client.get(f"{old}/sessions")).json().get("initialized", 0)
            for tool, arguments in (("echo", {"text": "x"}), ("slow_count", {"steps": 1, "delay": 0})):
                for label, url, sent in (
                    ("direct to the SDK server (2026-07-28)", f"{native}/mcp", None),
                    ("gateway, native pool", f"{gateway}/mcp/native", None),
                    ("direct to the 2025-only server, in a 2025-11-25 session", f"{old}/mcp", own),
                    ("gateway, bridged pool (2025-only upstream)", f"{gateway}/mcp/bridged", None),
                ):
                    print(f"{tool}, {label}: {await timed(client, url, n, tool, arguments, sent)}")
            opened = (await client.get(f"{old}/sessions")).json().get("initialized", 0) - opened_before
        print(f"upstream sessions the bridge opened for {2 * n} calls of one principal: {opened}")
        await principals(group, old, redis_url, clients)
    finally:
        group.stop_all()


async def principals(group: ProcessGroup, old: str, redis_url: str, clients: int) -> None:
    """Upstream sessions held for `clients` clients of one principal, and for `clients` principals."""
    auth = ("--auth-issuer", ISSUER, "--auth-public-key", PUBLIC_PEM, "--resource-url", "https://gw.example/mcp")
    gateway = start(
        group,
        "gateway-auth",
        [
            *(sys.executable, "-m", "gateway", "--redis-url", redis_url, "--upstream", f"bridged={old}/mcp", *auth),
            *("--key-prefix", f"bench-bridge-{secrets.token_hex(3)}", "--bridge-max-sessions", str(clients + 10)),
        ],
        "readyz",
    )
    url = f"{gateway}/mcp/bridged"
    async with httpx.AsyncClient(timeout=60) as client:

        async def call(who: str) -> None:
            sent = {**headers("echo"), "Authorization": f"Bearer {token(who)}"}
            response = await client.post(url, json=body("echo", {"text": "x"}), headers=sent)
            assert response.status_code == 200 and b'"result"' in response.content, response.text

        for label, names in (
            ("one principal", ["alice"] * clients),
            (f"{clients} principals", list(map(str, range(clients)))),
        ):
            before = (await client.get(f"{old}/sessions")).json().get("initialized", 0)
            started = time.perf_counter()
            for at in range(0, clients, 20):
                await asyncio.gather(*(call(who) for who in names[at : at + 20]))
            seconds = time.perf_counter() - started
            opened = (await client.get(f"{old}/sessions")).json().get("initialized", 0) - before
            print(f"{clients} clients of {label}: {opened} upstream sessions held, {seconds:.1f} s for the calls")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args(argv)
    asyncio.run(run(args.n, args.clients))


if __name__ == "__main__":
    main()
