"""Measure what each health-probe kind costs an upstream: log lines and sessions per probe.

    .venv/bin/python scripts/probe_costs.py [--probes 10]

Starts the Python SDK 2.3.0 test server at INFO (what `MCPServer.run()` logs by default: its
session manager's "Created new transport ..." / "Terminating session ..." lines and uvicorn's
access log) and `@modelcontextprotocol/server-everything` (which logs "Received MCP GET/POST
request"), sends each probe kind with the gateway's own `Prober` and prints a Markdown table:
new log lines per probe, sessions the SDK server created, and what the probe concluded.
The README's "Health probes" table is this script's output.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.config.specs import PROBE_KINDS, ProbeSpec  # noqa: E402
from gateway.upstream.probes import Prober  # noqa: E402
from tests.integration.procs import Proc, ProcessGroup, free_port, start_everything  # noqa: E402

SDK_SERVER = REPO / "tests" / "servers" / "sdk_server.py"
SESSION_LINE = "Created new transport"


@dataclass(frozen=True)
class Cost:
    lines_per_probe: float
    sessions_per_probe: float
    up: bool
    sample: str  # the first new log line, if any


def log_lines(proc: Proc) -> list[str]:
    return proc.log_path.read_text(errors="replace").splitlines()


async def measure(proc: Proc, url: str, spec: ProbeSpec, probes: int, http: aiohttp.ClientSession) -> Cost:
    """Send `probes` probes of one kind and count what the upstream logged meanwhile."""
    before = len(log_lines(proc))
    prober = Prober(http, timeout=2.0)
    results = [await prober(url, spec) for _ in range(probes)]
    await asyncio.sleep(0.5)  # let the upstream flush its log
    new = log_lines(proc)[before:]
    sessions = sum(SESSION_LINE in line for line in new)
    return Cost(len(new) / probes, sessions / probes, all(results), new[0].strip() if new else "")


def start_sdk(group: ProcessGroup) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, str(SDK_SERVER), "--port", str(port), "--event-store", "--log-level", "INFO"]
    proc = group.start(f"sdk-{port}", argv)
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    return proc, f"http://127.0.0.1:{port}/mcp"


async def run(probes: int, log_dir: Path) -> list[tuple[str, str, Cost]]:
    group = ProcessGroup(log_dir=log_dir)
    rows: list[tuple[str, str, Cost]] = []
    try:
        servers = {"Python SDK 2.3.0": start_sdk(group)}
        everything_url = start_everything(group)
        servers["server-everything"] = (group.procs[-1], everything_url)
        await asyncio.sleep(0.5)  # start-up lines are not the probes'
        kinds = [ProbeSpec(kind, 1.0) for kind in PROBE_KINDS]
        async with aiohttp.ClientSession() as http:
            for spec in kinds:
                for name, (proc, url) in servers.items():
                    rows.append((spec.describe(), name, await measure(proc, url, spec, probes, http)))
    finally:
        group.stop_all()
    return rows


def table(rows: list[tuple[str, str, Cost]]) -> str:
    out = [
        "| probe | upstream | log lines / probe | sessions / probe | up? | first line logged |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, name, cost in rows:
        sample = f"`{cost.sample[:70]}`" if cost.sample else ""
        out.append(
            f"| `{kind}` | {name} | {cost.lines_per_probe:g} | {cost.sessions_per_probe:g} | "
            f"{'yes' if cost.up else 'no'} | {sample} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=int, default=10, help="probes of each kind per upstream")
    parser.add_argument("--log-dir", type=Path, default=REPO / ".pytest_cache" / "probe-costs")
    args = parser.parse_args()
    print(table(asyncio.run(run(args.probes, args.log_dir))))


if __name__ == "__main__":
    main()
