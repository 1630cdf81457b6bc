"""Shared by the era-bridging tests (part B): the 2026-07-28-only upstream and the gateway flags."""

from __future__ import annotations

import sys

import httpx

from tests.integration.conftest import GatewayProc
from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port

SERVER = REPO_ROOT / "tests" / "servers" / "sdk_2026_server.py"
GW_ARGS = ("--log-format", "text", "--upstream-era", "default=2026")
BRIDGED = "mcpgw_bridged_requests_total"


def start_2026_upstream(procs: ProcessGroup, name: str = "u1") -> str:
    port = free_port()
    proc = procs.start(f"sdk2026-{name}-{port}", [sys.executable, str(SERVER), "--port", str(port), "--name", name])
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    return f"http://127.0.0.1:{port}/mcp"


def bridged_count(gateways: list[GatewayProc]) -> float:
    total = 0.0
    for gw in gateways:
        if not gw.proc.alive():
            continue
        for line in httpx.get(gw.metrics_url).text.splitlines():
            if line.startswith(BRIDGED + "{") and 'direction="2025-to-2026"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total
