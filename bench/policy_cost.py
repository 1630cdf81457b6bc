"""What the policy and the audit trail cost: CPU per JSON `tools/call` of one replica with no policy,
a policy of 1, 20 and 200 rules, and each audit sink, in one run.

    .venv/bin/python -m bench.policy_cost [--duration 3] [--rounds 3] [--conns 16] [--targets none,rules20]
    .venv/bin/python -m bench.policy_cost --instructions [--calls 300] [--targets ...]

Every replica serves the same fast upstream (bench/fast_upstream.py) and Redis. A policy of N rules
is N-1 deny rules and one allow rule, none of the deny rules true for the measured call. `rulesN`
reads no header or argument, so a repeated request is decided from the policy's memo; `rulesNh`
has rules reading a header, so every request evaluates every rule (the worst case). Rounds
interleave the targets (rotated per round) so the drift of a shared machine falls on all of them;
the figure per target is the median over rounds of the replica's process CPU over the calls it
completed. `--instructions` counts instructions per call instead (callgrind, one connection), which
machine noise cannot move. Target of issue 34: 20 rules add at most 10 % CPU per JSON call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import loadgen as lg
from bench.suite import cleanup_redis
from bench.topology import PY, RESULTS, tree_cpu_seconds
from tests.integration.procs import Proc, ProcessGroup, free_port

TARGETS = ("none", "rules1", "rules20", "rules200", "rules20h", "rules200h", "audit_stdout", "audit_redis")


def policy_text(n: int, headers: bool = False) -> str:
    """n rules of the issue's shapes: n-1 deny rules false for the measured call, then one allow rule;
    with `headers`, a quarter of them read a request header (then no decision can be kept)."""
    shapes = [
        'mcp.tool.name == "tool_{i}" && !("admin" in jwt.roles)',
        'client.ip == "10.0.{i}.1"',
        'mcp.tool.name.startsWith("ns{i}_") && pool == "files"',
        'mcp.method == "m{i}" && mcp.prompt.name == "p{i}"',
    ]
    if headers:  # a rule reads a header: no decision is kept, every request evaluates every rule
        shapes[-1] = 'mcp.method == "m{i}" && request.headers["x-team"] == "t{i}"'
    deny = [shapes[i % len(shapes)].format(i=i) for i in range(n - 1)]
    return json.dumps({"deny": deny, "allow": ['mcp.method != "x/none"']})  # JSON is YAML


def extra_args(target: str, tmp: Path) -> list[str]:
    if target.startswith("rules"):
        path = tmp / f"policy-{target}.yaml"
        path.write_text(policy_text(int(target.removeprefix("rules").removesuffix("h")), target.endswith("h")))
        return ["--policy", str(path)]
    if target.startswith("audit_"):
        return ["--audit", target.removeprefix("audit_")]
    return []


def start_gateway(
    group: ProcessGroup, target: str, upstream: str, redis_url: str, prefix: str, tmp: Path
) -> tuple[str, Proc]:
    port = free_port()
    argv = [PY, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--upstream", f"default={upstream}"]
    argv += ["--redis-url", redis_url, "--key-prefix", f"{prefix}{target}", "--log-level", "warning"]
    argv += ["--log-format", "text", *extra_args(target, tmp)]
    proc = group.start(f"gateway-{target}-{port}", argv)
    return f"http://127.0.0.1:{port}/mcp", proc


async def measure(url: str, pid: int, conns: int, duration: float) -> dict[str, float]:
    async with lg.sessions_at(url, conns) as sids, lg.new_session(conns) as http:

        async def one(i: int) -> None:
            await lg.call_json(http, url, sids[i % len(sids)])

        await lg.closed_loop(conns, 0.5, one, warmup=0.0)  # warm-up
        c0 = tree_cpu_seconds(pid)
        res = await lg.closed_loop(conns, duration, one, warmup=0.0)
        cpu = tree_cpu_seconds(pid) - c0
    if res.errors:
        raise SystemExit(f"{url}: {res.errors} errors, first: {res.first_error}")
    return {"cpu_us_per_call": 1e6 * cpu / max(res.completed, 1), "ops_per_s": res.completed / duration}


class _NoQuotas:
    async def take(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the measured policies have no quota")


async def decision_cost(n: int, tmp: Path, calls: int = 20_000) -> float:
    """CPU us of one request's decision in this process (Governor.check on a typical sessionful
    `tools/call`): the policy's own share of a call, without the noise of a whole replica."""
    from prometheus_client import CollectorRegistry
    from starlette.requests import Request

    from gateway.policy.counters import PolicyCounters
    from gateway.policy.governor import Governor
    from gateway.policy.source import PolicySource

    path = tmp / f"decide-{n}.yaml"
    path.write_text(policy_text(n, headers=True))  # every rule evaluated on every request
    counters = PolicyCounters(CollectorRegistry())
    governor = Governor(PolicySource(str(path), counters), _NoQuotas(), counters, lambda request: "127.0.0.1")  # type: ignore[arg-type]
    headers = [(k.encode(), v.encode()) for k, v in lg.headers("a" * 32).items()] + [(b"host", b"127.0.0.1:8080")]
    params = {"name": "json", "arguments": {"text": "hi"}}
    start = time.process_time()
    for i in range(calls):
        request = Request(
            {"type": "http", "method": "POST", "path": "/mcp", "headers": headers, "client": ("127.0.0.1", 1)}
        )
        await governor.check(request, "default", "tools/call", params, i)
    return 1e6 * (time.process_time() - start) / calls


async def run(args: argparse.Namespace) -> dict[str, Any]:
    group = ProcessGroup(log_dir=RESULTS / "logs")
    prefix = f"benchpol{os.getpid()}"
    tmp = RESULTS / "policy-files"
    tmp.mkdir(parents=True, exist_ok=True)
    targets = tuple(t for t in TARGETS if t in args.targets.split(","))
    decisions = {f"rules{n}": round(await decision_cost(n, tmp), 1) for n in (1, 20, 200)}
    print(f"[policy] decision alone, us/request: {decisions}", file=sys.stderr)
    try:
        port = free_port()
        fast = group.start(f"fast-upstream-{port}", [PY, "-m", "bench.fast_upstream", "--port", str(port)])
        fast.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
        upstream = f"http://127.0.0.1:{port}/mcp"
        gateways = {t: start_gateway(group, t, upstream, args.redis_url, prefix, tmp) for t in targets}
        for url, proc in gateways.values():
            proc.wait_http(url.removesuffix("/mcp") + "/readyz", timeout=30)
        rounds: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
        for r in range(args.rounds):
            for target in targets[r % len(targets) :] + targets[: r % len(targets)]:
                url, proc = gateways[target]
                fig = await measure(url, proc.pid, args.conns, args.duration)
                rounds[target].append(fig)
                print(f"[policy] round {r + 1} {target:12s} {fig['cpu_us_per_call']:7.1f} us/call", file=sys.stderr)
        rows: dict[str, dict[str, float]] = {}
        for target, figs in rounds.items():
            per_call = [f["cpu_us_per_call"] for f in figs]
            rows[target] = {
                "cpu_us_per_call": round(statistics.median(per_call), 1),
                "min": round(min(per_call), 1),
                "max": round(max(per_call), 1),
                "ops_per_s": round(statistics.median(f["ops_per_s"] for f in figs), 1),
            }
        if "none" in rows:
            base = rows["none"]["cpu_us_per_call"]
            for row in rows.values():
                row["x_none"] = round(row["cpu_us_per_call"] / base, 3)
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
            "conns": args.conns,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "decision_us": decisions,
            "results": rows,
        }
    finally:
        group.stop_all()
        for target in targets:
            cleanup_redis(args.redis_url, f"{prefix}{target}")


def table(out: dict[str, Any]) -> str:
    lines = [
        f"policy cost ({out['date']}, {out['cpus']} cores, load {out['load']:.1f}, {out['conns']} conns, "
        f"{out['rounds']} rounds of {out['duration_s']} s), JSON tools/call",
        f"{'target':13s} {'CPU us/call':>12s} {'(min-max)':>15s} {'x none':>8s} {'calls/s':>9s}",
    ]
    for target, row in out["results"].items():
        spread = f"{row['min']:.0f}-{row['max']:.0f}"
        ratio = row.get("x_none", float("nan"))
        lines.append(f"{target:13s} {row['cpu_us_per_call']:12.1f} {spread:>15s} {ratio:8.3f} {row['ops_per_s']:9.0f}")
    lines.append(f"decision alone (in process), CPU us/request: {out['decision_us']}")
    return "\n".join(lines)


def instructions(args: argparse.Namespace) -> dict[str, float]:
    """Instructions per JSON call of each target at one connection (callgrind: machine noise
    cannot move it; bench/instructions.py)."""
    from bench.instructions import count
    from bench.topology import REPO, Topology

    tmp = RESULTS / "policy-files"
    tmp.mkdir(parents=True, exist_ok=True)
    top = Topology(args.redis_url, f"bench-polinstr-{os.getpid()}", replicas=0, with_nginx=False, with_sdk=False)
    top.start()
    try:
        found: dict[str, float] = {}
        for target in (t for t in TARGETS if t in args.targets.split(",")):
            found[target] = count(top, REPO, args.calls, False, extra_args(target, tmp))
            print(f"[policy] {target:12s} {found[target] / 1000:.1f} k instructions per call", file=sys.stderr)
        return found
    finally:
        top.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measured window")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--targets", default=",".join(TARGETS), help=f"a subset of {','.join(TARGETS)}")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--out", type=Path, help="results JSON (default bench/results/policy-<date>.json)")
    p.add_argument("--instructions", action="store_true", help="count instructions per call instead (callgrind)")
    p.add_argument("--calls", type=int, default=300, help="with --instructions: calls counted per target")
    args = p.parse_args(argv)
    if args.instructions:
        counted = instructions(args)
        base = counted.get("none")
        for target, value in counted.items():
            ratio = f"{value / base:.3f}" if base else "-"
            print(f"{target:13s} {value / 1000:9.1f} k instructions per JSON call, x none {ratio}")
        return 0
    out = asyncio.run(run(args))
    path = args.out or RESULTS / f"policy-{out['date'][:10]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(table(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
