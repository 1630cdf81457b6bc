"""`python -m bench`: run the benchmark suite and report.

    bench/run                      # full suite (~4-5 min): results/<date>.json, README table, summary
    .venv/bin/python -m bench --smoke --out /tmp/x.json   # tiny run: 1 replica, no nginx/wrk/py-spy
    .venv/bin/python -m bench --only json,sse --duration 3
    .venv/bin/python -m bench --only idle --idle 5000x1@10      # 5,000 streams, keep-alive every 1 s

Topology: the fast upstream (bench/fast_upstream.py) and the SDK server, each reached
directly, through nginx, through one gateway replica (gw1, no load balancer) and through
N replicas sharing Redis behind HAProxy (gwN+lb, round robin, no stickiness).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench import chart, report, reqpath, scenarios, stream_scenarios
from bench.knobs import Knobs
from bench.loadgen import wrk_binary
from bench.progress import Progress
from bench.topology import REPO, RESULTS, Topology, describe_machine, nginx_binary, raise_nofile

ALL = (
    "json",
    "json_sdk",
    "client_ceiling",
    "reqpath",
    "redis_clients",
    "sse",
    "churn",
    "resume",
    "idle",
    "clients",
    "profile",
)
DATE = time.strftime("%Y-%m-%d")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny run: 1 replica, no nginx, no wrk, no SDK, no profile")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 4; smoke 0.3)")
    p.add_argument("--replicas", type=int, help="gateway replicas behind HAProxy (default 3; smoke 1)")
    p.add_argument(
        "--idle",
        default=None,
        metavar="NxK@S,...",
        help="scenario 5 phases: N streams, keep-alive K s, idle window S s "
        "(default 5000x15@5,2000x15@5,1000x1@10; smoke 20x0.5@1)",
    )
    p.add_argument("--resume-reps", type=int, help="repetitions of scenario 4 (default 20)")
    p.add_argument("--nginx", action=argparse.BooleanOptionalAction, default=None, help="nginx baseline rows")
    p.add_argument("--wrk", action=argparse.BooleanOptionalAction, default=None, help="wrk for scenario 1")
    p.add_argument("--sdk", action=argparse.BooleanOptionalAction, default=None, help="SDK-server row")
    p.add_argument("--profile-seconds", type=int, default=5)
    p.add_argument("--reqpath-rounds", type=int, help="scenario 7: rounds of every target, medians (default 3)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument(
        "--own-redis",
        action="store_true",
        help="start a private redis-server for the run (exact Redis command counts on a shared machine)",
    )
    p.add_argument("--granian", action="store_true", help="scenario 7 row `gw1-granian`: this code on granian")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run one replica of the gateway at git revision REV (scenario 7 row `gw1-base`)",
    )
    p.add_argument("--out", type=Path, help=f"results JSON (default bench/results/{DATE}.json)")
    p.add_argument(
        "--readme",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write the tables into bench/README.md (default: on for a full run)",
    )
    return p.parse_args(argv)


def configure(args: argparse.Namespace) -> tuple[Knobs, dict[str, Any]]:
    smoke = args.smoke
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) or ALL
    bad = set(only) - set(ALL)
    if bad:
        raise SystemExit(f"unknown scenario(s): {sorted(bad)}")
    opts: dict[str, Any] = {
        "only": only,
        "replicas": args.replicas or (1 if smoke else 3),
        "nginx": args.nginx if args.nginx is not None else not smoke,
        "wrk": args.wrk if args.wrk is not None else not smoke,
        "sdk": args.sdk if args.sdk is not None else not smoke,
    }
    if smoke:
        opts["only"] = tuple(s for s in only if s not in ("profile",) and (s != "json_sdk" or opts["sdk"]))
    elif not opts["sdk"]:
        opts["only"] = tuple(s for s in opts["only"] if s != "json_sdk")
    # Missing tools fail loudly in a full run; a smoke run never needs them.
    if opts["nginx"] and nginx_binary() is None:
        raise SystemExit("nginx is not installed: run bench/setup (or pass --no-nginx)")
    if opts["wrk"] and wrk_binary() is None:
        raise SystemExit("wrk is not installed: run bench/setup (or pass --no-wrk)")
    knobs = Knobs(
        duration=args.duration or (0.3 if smoke else 4.0),
        conns=(1, 4) if smoke else (1, 64),
        use_wrk=opts["wrk"],
        resume_events=50 if smoke else 1000,
        resume_reps=args.resume_reps or (3 if smoke else 20),
        idle_phases=parse_phases(args.idle or ("20x0.5@1" if smoke else "5000x15@5,2000x15@5,1000x1@10")),
        client_streams=4 if smoke else 64,
        client_events=20 if smoke else 200,
        client_rounds=1 if smoke else 4,
        sessions_per_target=4 if smoke else 64,
        reqpath_rounds=args.reqpath_rounds or (1 if smoke else 3),
        workdir=RESULTS / "logs",
    )
    return knobs, opts


def parse_phases(text: str) -> tuple[tuple[int, float, float], ...]:
    phases = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x([\d.]+)@([\d.]+)\s*", part)
        if not m:
            raise SystemExit(f"--idle: bad phase {part!r} (want NxK@S, e.g. 5000x15@5)")
        phases.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    return tuple(phases)


def checkout(rev: str) -> Path:
    """The gateway's files at `rev`, unpacked in the temp dir (for the `gw1-base` replica)."""
    target = Path(tempfile.gettempdir()) / f"mcpgw-bench-baseline-{re.sub(r'[^A-Za-z0-9_.-]', '_', rev)}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "gateway"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def cleanup_redis(url: str, prefix: str) -> int:
    r = redis.Redis.from_url(url)
    n = 0
    try:
        batch = []
        for key in r.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                n += r.delete(*batch)
                batch.clear()
        if batch:
            n += r.delete(*batch)
    finally:
        r.close()
    return n


async def run(args: argparse.Namespace) -> dict[str, Any]:
    knobs, opts = configure(args)
    only = opts["only"]
    started = time.monotonic()
    nofile = raise_nofile(max([65536] + [4 * n + 4096 for n, _, _ in knobs.idle_phases]))
    prefix = f"bench{os.getpid()}x{int(time.time())}"
    topo = Topology(
        redis_url=args.redis_url,
        key_prefix=prefix,
        replicas=opts["replicas"],
        with_nginx=opts["nginx"],
        with_sdk=opts["sdk"] and "json_sdk" in only,
        with_lb=opts["replicas"] > 1,
        own_redis=args.own_redis,
        with_granian=args.granian,
        baseline_dir=checkout(args.baseline) if args.baseline else None,
    )
    results: dict[str, Any] = {
        "date": DATE,
        "mode": "smoke" if args.smoke else "full",
        "command": " ".join(
            ["bench/run" if os.environ.get("BENCH_RUN") else "python -m bench", *map(shlex.quote, sys.argv[1:])]
        ),
        "machine": describe_machine(),
        "config": {
            "replicas": opts["replicas"],
            "duration_s": knobs.duration,
            "conns": list(knobs.conns),
            "scenario1_loadgen": "wrk -t1" if knobs.use_wrk else "aiohttp",
            "protocol_version": "2025-11-25",
            "nofile": nofile,
            "redis_url": args.redis_url,
            "key_prefix": prefix,
            "sessions_per_target": knobs.sessions_per_target,
            "baseline": args.baseline,
        },
        "scenarios": {},
    }
    sc: dict[str, Any] = results["scenarios"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    # one counted step per scenario that runs (`resume` also runs its direct baseline)
    progress = Progress(total=len(only))
    step = progress.step
    progress.note(f"starting upstreams, {opts['replicas']} replica(s){', nginx' if opts['nginx'] else ''}")
    topo.start()
    results["config"]["redis_url"] = topo.redis_url

    try:
        if "json" in only:
            step("1. tools/call -> JSON")
            sc["json"] = await scenarios.json_calls(topo, knobs)
        if "json_sdk" in only:
            step("1b. tools/call -> SDK server")
            sc["json_sdk"] = await scenarios.json_calls(topo, knobs, upstream="sdk", duration=min(knobs.duration, 3))
        if "client_ceiling" in only:
            step("client ceiling")
            sc["client_ceiling"] = await scenarios.client_ceiling(topo, knobs)
        if "reqpath" in only:
            step("7. request path: CPU and Redis per call, one replica")
            sc["reqpath"] = await reqpath.request_path(topo, knobs, topo.redis_url)
        if "redis_clients" in only:
            step("8. Redis clients: redis-py options, coredis, valkey-glide")
            from bench.redis_clients import redis_clients

            sc["redis_clients"] = await redis_clients(
                topo.redis_url, prefix, ops=500 if args.smoke else 20_000, rounds=1 if args.smoke else 3
            )
        if "sse" in only:
            step("2. tools/call -> SSE")
            sc["sse"] = await scenarios.sse_calls(topo, knobs)
        if "churn" in only:
            step("3. session churn")
            sc["churn"] = await scenarios.churn(topo, knobs)
        if "resume" in only:
            step("4. resume")
            sc["resume"] = await stream_scenarios.resume(topo, knobs, topo.redis_url)
            sc["resume_direct"] = await stream_scenarios.resume_direct(topo, knobs)
        if "clients" in only:
            step("6. httpx vs aiohttp")
            sc["clients"] = await stream_scenarios.upstream_clients(topo, knobs)
        if "profile" in only:
            step("profile (py-spy)")
            from bench.profile import profile_gateway

            results["profile"] = await profile_gateway(topo, args.profile_seconds, RESULTS, knobs.workdir)
        if "idle" in only:
            step(f"5. idle streams {knobs.idle_phases}")
            sc["idle"] = await stream_scenarios.idle_streams(topo, knobs)
    finally:
        progress.note("stopping")
        topo.stop()
        print(progress.summary(), file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            results["config"]["redis_keys_deleted"] = cleanup_redis(topo.redis_url, prefix)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    report.derive(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(run(args))
    out = args.out or RESULTS / f"{DATE}{'-smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    png = chart.write(results, out.with_suffix(".png"))
    write_readme = args.readme if args.readme is not None else (not args.smoke and not args.only)
    if write_readme:
        report.update_readme(REPO / "bench" / "README.md", results)
    print(report.text(results))
    print(
        f"\nresults: {out}"
        + (f", chart: {png}" if png else "")
        + ("; tables written to bench/README.md" if write_readme else "")
    )
    return 0
