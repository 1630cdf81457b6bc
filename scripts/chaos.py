"""Chaos trials: SIGKILL a gateway replica at a random moment of a streamed tool call.

Topology (real processes): Redis, an SDK upstream with an event store, N gateway replicas
behind HAProxy (round robin, no stickiness). Each trial: a careful client initializes through
the load balancer, calls `slow_count` (progress notifications over SSE) and, at a random
moment, the replica pumping the stream (or a random one, if none pumps yet) is SIGKILLed and
restarted afterwards. The client resumes with Last-Event-ID. Every trial is classified:

  ok        result received, every progress notification exactly once and in order
  lost      a progress notification or the result never arrived
  dup       a notification or an event id arrived twice
  hung      no final answer within the deadline
  refused   the call broke before its first event (nothing to resume; the client sees an error)
  errored   the request was answered with a JSON-RPC error (e.g. the upstream could not resume)

Every trial that is not ok leaves `.chaos-logs/trial-<n>.json`: the session id, the kill time and
every event the client saw (connection, id, arrival time, message), to read beside the replicas'
logs (`--log-level debug` for the gateway's per-event lines).

Usage: .venv/bin/python scripts/chaos.py --trials 100 [--replicas 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.careful_client import CarefulClient, CarefulClientError  # noqa: E402
from tests.integration.procs import Proc, ProcessGroup, free_port, start_haproxy  # noqa: E402

STEPS = 10
DELAY = 0.05


async def lease_pid(redis: aioredis.Redis, prefix: str, session: str) -> int | None:
    async for key in redis.scan_iter(match=f"{prefix}:{{{session}}}:lease:*"):
        holder = await redis.get(key)
        if holder:
            return int(holder.decode().split(":")[1])
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def classify(outcome: Any) -> str:
    if isinstance(outcome, str):
        return outcome
    response = outcome.response
    if "error" in response:
        return "errored"
    progress = [p["progress"] for p in outcome.progress()]
    ids = outcome.event_ids()
    if len(ids) != len(set(ids)) or len(progress) != len(set(progress)):
        return "dup"
    if sorted(progress) != list(range(1, STEPS + 1)) or progress != sorted(progress):
        return "lost"
    if response.get("result", {}).get("content", [{}])[0].get("text") != f"counted {STEPS}":
        return "lost"
    return "ok"


class Cluster:
    def __init__(self, procs: ProcessGroup, replicas: int, redis_url: str, prefix: str, log_level: str) -> None:
        self.procs = procs
        self.log_level = log_level
        self.redis_url = redis_url
        self.prefix = prefix
        self.upstream_port = free_port()
        self.ports = [free_port() for _ in range(replicas)]
        self.gateways: dict[int, Proc] = {}

    def start_upstream(self) -> None:
        argv = [
            sys.executable,
            str(REPO / "tests/servers/sdk_server.py"),
            "--port",
            str(self.upstream_port),
            "--event-store",
        ]
        self.procs.start("upstream", argv).wait_http(f"http://127.0.0.1:{self.upstream_port}/healthz", 20)

    def start_gateway(self, port: int) -> None:
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "--port",
            str(port),
            "--redis-url",
            self.redis_url,
            "--upstream",
            f"default=http://127.0.0.1:{self.upstream_port}/mcp",
            "--retry-ms",
            "200",
            "--log-format",
            "text",
            "--log-level",
            self.log_level,
        ]
        proc = self.procs.start(f"gateway-{port}", argv, env={"MCPGW_KEY_PREFIX": self.prefix})
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", 20)
        self.gateways[port] = proc

    def port_of(self, pid: int) -> int | None:
        return next((port for port, proc in self.gateways.items() if proc.pid == pid), None)


def dump(path: Path, session: str, started: float, killed_at: list[float], port: int, outcome: Any) -> None:
    """What the client saw in a trial that was not ok, for diagnosis beside the replicas' logs."""
    detail: dict[str, Any] = {"session": session, "killed_port": port}
    detail["killed_after_s"] = round(killed_at[0] - started, 4) if killed_at else None
    if isinstance(outcome, str):
        detail["outcome"] = outcome
    else:
        detail["statuses"] = outcome.statuses
        detail["events"] = [
            {"connection": e.connection, "id": e.id, "at_s": round(e.at - started, 4), "data": e.data[:300]}
            for e in outcome.events
        ]
    path.write_text(json.dumps(detail, indent=2))


async def trial(
    cluster: Cluster, lb: str, redis: aioredis.Redis, rng: random.Random, number: int
) -> tuple[str, float, float | None]:
    kill_at = rng.uniform(0.0, STEPS * DELAY * 1.2)
    async with CarefulClient(lb, read_timeout=20) as client:
        await client.initialize()
        session = client.session_id
        assert session is not None

        killed_at: list[float] = []

        async def killer() -> int:
            await asyncio.sleep(kill_at)
            pid = await lease_pid(redis, cluster.prefix, session)
            port = cluster.port_of(pid) if pid else None
            if port is None:
                port = rng.choice(list(cluster.gateways))
            os.kill(cluster.gateways[port].pid, signal.SIGKILL)
            killed_at.append(time.monotonic())
            return port

        kill_task = asyncio.ensure_future(killer())
        started = time.monotonic()
        failure = ""
        outcome: Any
        try:
            outcome = await asyncio.wait_for(
                client.call_tool_resumable("slow_count", {"steps": STEPS, "delay": DELAY}, resume_timeout=20),
                timeout=30,
            )
        except TimeoutError:
            outcome = "hung"
        except CarefulClientError as exc:
            outcome = "refused" if "before any event id" in str(exc) or "POST" in str(exc) else "lost"
            failure = str(exc)
        elapsed = time.monotonic() - started
        port = await kill_task
    # resume gap: from the kill to the first event with data on a resumed connection (not its priming event)
    gap = None
    if not isinstance(outcome, str) and killed_at:
        later = [e.at for e in outcome.events if e.connection > 0 and e.at >= killed_at[0] and e.data.strip()]
        gap = later[0] - killed_at[0] if later else None
    verdict = classify(outcome)
    if verdict != "ok":
        shown = failure if isinstance(outcome, str) and failure else outcome
        dump(cluster.procs.log_dir / f"trial-{number}.json", session, started, killed_at, port, shown)
    cluster.gateways[port].stop()
    cluster.start_gateway(port)
    await asyncio.sleep(1.2)  # HAProxy health checks (inter 500ms, rise 1) re-admit it
    return verdict, elapsed, gap


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log-level", default="warning", help="the replicas' log level (debug: every event)")
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"mcpgw-chaos-{uuid.uuid4().hex[:8]}"
    rng = random.Random(args.seed)
    procs = ProcessGroup(log_dir=REPO / ".chaos-logs")
    redis = aioredis.from_url(redis_url)
    results: Counter[str] = Counter()
    durations: list[float] = []
    gaps: list[float] = []
    try:
        cluster = Cluster(procs, args.replicas, redis_url, prefix, args.log_level)
        cluster.start_upstream()
        for port in cluster.ports:
            cluster.start_gateway(port)
        _, lb_port = start_haproxy(procs, [("127.0.0.1", p) for p in cluster.ports])
        lb = f"http://127.0.0.1:{lb_port}/mcp"
        await asyncio.sleep(1.0)
        for n in range(args.trials):
            verdict, elapsed, gap = await trial(cluster, lb, redis, rng, n + 1)
            results[verdict] += 1
            durations.append(elapsed)
            if gap is not None:
                gaps.append(gap)
            shown = f", resumed after {gap:.2f}s" if gap is not None else ""
            print(f"trial {n + 1}/{args.trials}: {verdict} ({elapsed:.2f}s{shown})", flush=True)
    finally:
        procs.stop_all()
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
    summary = {
        "trials": args.trials,
        "replicas": args.replicas,
        "seed": args.seed,
        **dict(results),
        "call_seconds_p50": sorted(durations)[len(durations) // 2] if durations else None,
        "call_seconds_max": max(durations) if durations else None,
        "resumed_trials": len(gaps),
        "kill_to_first_resumed_event_p50": percentile(gaps, 0.5),
        "kill_to_first_resumed_event_p99": percentile(gaps, 0.99),
    }
    print(json.dumps(summary, indent=2))
    print(f"lost / duplicated / hung: {results['lost']} / {results['dup']} / {results['hung']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if results["lost"] or results["dup"] or results["hung"]:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
