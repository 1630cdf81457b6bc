"""Instructions per call of one replica, counted by callgrind: a figure machine noise cannot move.

    .venv/bin/python -m bench.instructions [--baseline REV] [--calls 300] [--runs 2] [--sse]

On a shared VM the CPU time of a call moves by 30-50 % between runs minutes apart; the number of
user-space instructions the replica executes for it does not (two runs of the same code differ by
under 1 %). Each run starts the replica (this checkout, and `--baseline REV` unpacked as for
`python -m bench --baseline`) under `valgrind --tool=callgrind` with counting off, makes 200 calls
to warm it up, turns counting on for `--calls` sequential calls on one connection (JSON
`tools/call`, or SSE answers of 5 events with `--sse`), and reads the total. What it does not see:
the kernel's side of the system calls, cache misses, and the batching a loaded replica gets (a
call at 1 connection costs about twice its share under load); compare trees with it, and take
CPU time under load from scenario 7.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import aiohttp

from bench import loadgen as lg
from bench.suite import checkout
from bench.topology import NO_METRICS_LISTENER, REPO, UNCAPPED, Topology
from tests.integration.procs import free_port


def total_instructions(path: Path) -> int:
    """The instruction total of a callgrind output file: the larger of its `summary:` and
    `totals:` lines (a dump asked for by `callgrind_control -d` writes `summary: 0`)."""
    totals = [
        int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith(("summary:", "totals:"))
    ]
    if not totals:
        raise ValueError(f"{path}: no callgrind totals")
    return max(totals)


async def _calls(url: str, sid: str, http: aiohttp.ClientSession, n: int, sse: bool) -> None:
    for _ in range(n):
        if sse:
            await lg.call_sse(http, url, sid, 5)
        else:
            await lg.call_json(http, url, sid)


async def _control(pid: int, *args: str) -> None:
    """`callgrind_control ARGS PID` (counting on or off, or a dump of the counts so far)."""
    proc = await asyncio.create_subprocess_exec(
        "callgrind_control", *args, str(pid), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"callgrind_control {' '.join(args)} failed: {err.decode(errors='replace')}")


def count(top: Topology, tree: Path, calls: int, sse: bool, extra: list[str] | None = None) -> float:
    """Instructions per call of a replica of `tree` (with the flags `extra`), counted while it
    served `calls` calls."""
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix="mcpgw-callgrind-")) / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    proc = top.group.start(
        f"callgrind-{port}",
        [*argv, *top.gateway_argv(port, extra)],
        cwd=tree,
        env={"PYTHONHASHSEED": "0", **UNCAPPED, **NO_METRICS_LISTENER},
    )
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=300)
        url = f"http://127.0.0.1:{port}/mcp"

        async def run() -> None:
            async with lg.sessions_at(url, 1, conns=1) as sids, lg.new_session(1) as http:
                await _calls(url, sids[0], http, 200, sse)
                await _control(proc.pid, "-i", "on")
                await _calls(url, sids[0], http, calls, sse)
                await _control(proc.pid, "-i", "off")
                await _control(proc.pid, "-d")

        asyncio.run(run())
    finally:
        proc.stop()
    try:
        return max(total_instructions(p) for p in out.parent.glob(out.name + "*")) / calls
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision of the gateway to count beside this checkout")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--runs", type=int, default=2, help="runs per tree, alternating")
    parser.add_argument("--sse", action="store_true", help="SSE answers of 5 events instead of JSON")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args(argv)
    trees = {"this checkout": REPO}
    if args.baseline:
        trees[args.baseline] = checkout(args.baseline)
    top = Topology(args.redis_url, f"bench-instr-{os.getpid()}", replicas=0, with_nginx=False, with_sdk=False)
    top.start()
    try:
        counts: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                counts[name].append(count(top, tree, args.calls, args.sse))
    finally:
        top.stop()
    kind = "SSE call (5 events)" if args.sse else "JSON call"
    for name, values in counts.items():
        runs = ", ".join(f"{v / 1000:.1f}" for v in values)
        print(f"{name}: {min(values) / 1000:.1f} k instructions per {kind} at 1 connection (runs: {runs})")


if __name__ == "__main__":
    main()
