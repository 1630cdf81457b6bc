"""Health probes against real upstreams: the default probe leaves no trace in their logs.

The Python SDK 2.3.0 server runs at INFO, as `MCPServer.run()` does by default (its session
manager logs every session it creates, uvicorn logs every request); server-everything logs
every GET and POST. Replicas probing both every 0.1 s must add no line to either log and
create no SDK session, and must still notice an upstream that dies. A replica probing with
today's GET is the control: the same logs then fill up, so the counting does see probes.
"""

from __future__ import annotations

import asyncio
import sys

import httpx

from tests.integration.conftest import SDK_SERVER, StartGateways
from tests.integration.procs import Proc, ProcessGroup, free_port, start_everything

FAST = ("--health-interval", "0.1", "--health-timeout", "0.5")
SESSION_LINE = "Created new transport"
# Era detection asks each instance once (server/discover): pinned here, so only health probes are counted.
ERAS = ("--upstream-era", "sdk=both", "--upstream-era", "everything=2025")


def start_sdk_at_info(procs: ProcessGroup) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, str(SDK_SERVER), "--port", str(port), "--event-store", "--log-level", "INFO"]
    proc = procs.start(f"sdk-info-{port}", argv)
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    return proc, f"http://127.0.0.1:{port}/mcp"


def lines(proc: Proc) -> list[str]:
    return proc.log_path.read_text(errors="replace").splitlines()


async def readyz(base_url: str) -> tuple[int, object]:
    async with httpx.AsyncClient(timeout=2) as client:
        response = await client.get(f"{base_url}/readyz")
    return response.status_code, response.json()


async def until_not_ready(base_url: str, seconds: float) -> tuple[int, object]:
    for _ in range(int(seconds / 0.1)):
        status = await readyz(base_url)
        if status[0] == 503:
            return status
        await asyncio.sleep(0.1)
    return await readyz(base_url)


async def test_default_probe_creates_no_session_and_no_log_line(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    sdk, sdk_url = start_sdk_at_info(procs)
    everything_url = start_everything(procs)
    everything = procs.procs[-1]
    upstreams = {"sdk": sdk_url, "everything": everything_url}
    await asyncio.sleep(0.5)
    sdk_before, everything_before = len(lines(sdk)), len(lines(everything))

    replicas = gateway_cluster(2, upstreams, key_prefix, (*FAST, *ERAS))
    for gw in replicas:
        assert (await readyz(gw.base_url))[0] == 200  # the start-up probes found both upstreams up
    await asyncio.sleep(2.0)  # 2 replicas x ~20 rounds: ~40 probes of each upstream
    assert lines(sdk)[sdk_before:] == [], "the SDK server logged the default probe"
    assert lines(everything)[everything_before:] == [], "server-everything logged the default probe"

    # The control: today's GET probe, same logs, same interval.
    (control,) = gateway_cluster(1, upstreams, key_prefix, (*FAST, *ERAS, "--health-probe", "get"))
    await asyncio.sleep(1.0)
    sdk_new, everything_new = lines(sdk)[sdk_before:], lines(everything)[everything_before:]
    control.proc.stop()
    assert sum(SESSION_LINE in line for line in sdk_new) >= 3, sdk_new[:5]
    assert sum("Received MCP GET request" in line for line in everything_new) >= 3, everything_new[:5]

    # Cheap is not blind: the TCP probe still notices a dead upstream.
    sdk.kill()
    down = (503, {"status": "no healthy upstream instance", "pools": ["sdk"]})
    for gw in replicas:
        assert await until_not_ready(gw.base_url, 5) == down
