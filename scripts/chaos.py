"""Chaos trials: break a replica (or Redis) at a random moment of a streamed tool call, per mode.

Topology per mode (real processes): Redis, an SDK upstream, N gateway replicas behind HAProxy
(round robin, no stickiness). Each trial: a careful client initializes through the load balancer,
calls `slow_count` (progress notifications over SSE, one tag per trial) and, at a random moment,
the mode breaks something; the client resumes with Last-Event-ID. Modes (`--modes a,b` or `all`):

  sigkill           SIGKILL the replica pumping the call; the upstream has an event store
  sigkill-no-store  the same, upstream without an event store (the SDK default: not resumable)
  sigterm           SIGTERM (a rolling update) instead of SIGKILL; event store
  sigterm-no-store  SIGTERM, upstream without an event store
  replay-lb         SIGKILL behind HAProxy with `retry-on conn-failure empty-response`, and the same
                    POST (same id, same body) sent a second time at a random moment, as a retrying
                    client would; both copies must get every event once and the tool must run once
  redis-restart     chaos's OWN redis-server (a free port, persistence off; never 127.0.0.1:6379) is
                    restarted mid-call, losing everything: the client must be told (a gap)

Every trial is classified (the worst of its copies):

  ok        result received, every progress notification exactly once and in order
  gap       the loss was reported: a JSON-RPC error naming it, or 404 for a session the store lost
  errored   the request was answered with a JSON-RPC error (e.g. the upstream could not resume)
  refused   the call broke before its first event (nothing to resume; the client sees an error)
  lost      a progress notification or the result never arrived, silently
  dup       a notification or an event id arrived twice
  hung      no final answer within the deadline

and the upstream's executions of its tag are counted (`twice`: the tool ran more than once).
Every trial that is not ok leaves `.chaos-logs/trial-<mode>-<n>.json`: the session id, the break
time and every event the client saw (connection, id, arrival time, message), to read beside the
replicas' logs (`--log-level debug` for the gateway's per-event lines).

Usage: .venv/bin/python scripts/chaos.py --trials 100 [--modes all] [--replicas 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.store.keys import Keys  # noqa: E402
from tests.integration.careful_client import CarefulClient, CarefulClientError, SessionGone  # noqa: E402
from tests.integration.procs import (  # noqa: E402
    Proc,
    ProcessGroup,
    ProcessStartError,
    free_port,
    haproxy_binary,
    haproxy_config,
)

STEPS = 10
DELAY = 0.05
VERDICTS = ("ok", "gap", "errored", "refused", "lost", "dup", "hung")  # in order of severity
FAILURES = ("lost", "dup", "hung", "twice")


@dataclass(frozen=True)
class Mode:
    name: str
    event_store: bool = True
    signal: int = signal.SIGKILL
    replay: bool = False
    redis_restart: bool = False
    retry_on: str = "conn-failure"


MODES = {
    m.name: m
    for m in (
        Mode("sigkill"),
        Mode("sigkill-no-store", event_store=False),
        Mode("sigterm", signal=signal.SIGTERM),
        Mode("sigterm-no-store", event_store=False, signal=signal.SIGTERM),
        Mode("replay-lb", replay=True, retry_on="conn-failure empty-response"),
        Mode("redis-restart", redis_restart=True),
    )
}


async def pumping_pid(redis: aioredis.Redis, prefix: str, session: str, request_id: int) -> int | None:
    """The pid of the replica pumping the call: its lease names the replica (`host:pid:nonce`); the
    request-id claim names the stream, so no SCAN of a shared Redis is needed (too slow there)."""
    claim: Any = await redis.hget(Keys(prefix).requests(session), f"r:{request_id}")
    if claim is None:
        return None
    holder: Any = await redis.get(Keys(prefix).lease(session, json.loads(claim)["stream"]))
    replica = (holder or b"").decode() or json.loads(claim)["replica"]
    return int(replica.split(":")[1])


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def classify(outcome: Any, mode: Mode) -> str:
    if isinstance(outcome, str):
        return "gap" if outcome == "gone" else outcome
    response = outcome.response
    if "error" in response:
        # A lost store reaches the client as a JSON-RPC error naming the loss: reported, not silent.
        return "gap" if mode.redis_restart else "errored"
    progress = [p["progress"] for p in outcome.progress()]
    ids = outcome.event_ids()
    if len(ids) != len(set(ids)) or len(progress) != len(set(progress)):
        return "dup"
    if sorted(progress) != list(range(1, STEPS + 1)) or progress != sorted(progress):
        return "lost"
    if response.get("result", {}).get("content", [{}])[0].get("text") != f"counted {STEPS}":
        return "lost"
    return "ok"


class OwnRedis:
    """A redis-server of chaos's own (free port, no persistence), restartable without touching 6379."""

    def __init__(self, procs: ProcessGroup) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ProcessStartError("redis-server is not installed: run scripts/setup")
        self.binary = binary
        self.procs = procs
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = self.procs.start(f"redis-{self.port}", argv)
        self.proc.wait_port(self.port, 10)

    def restart(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL, by pid: with persistence off, everything it held is gone
        self.start()


class Cluster:
    def __init__(self, procs: ProcessGroup, mode: Mode, replicas: int, redis_url: str, log_level: str) -> None:
        self.procs = procs
        self.mode = mode
        self.log_level = log_level
        self.redis_url = redis_url
        self.prefix = f"mcpgw-chaos-{uuid.uuid4().hex[:8]}"
        self.upstream_port = free_port()
        self.ports = [free_port() for _ in range(replicas)]
        self.gateways: dict[int, Proc] = {}
        self.own_redis: OwnRedis | None = None

    def start(self) -> str:
        """Start everything; returns the load balancer's /mcp URL."""
        if self.mode.redis_restart:
            self.own_redis = OwnRedis(self.procs)
            self.own_redis.start()
            self.redis_url = self.own_redis.url
        argv = [sys.executable, str(REPO / "tests/servers/sdk_server.py"), "--port", str(self.upstream_port)]
        if self.mode.event_store:
            argv.append("--event-store")
        self.procs.start("upstream", argv).wait_http(f"http://127.0.0.1:{self.upstream_port}/healthz", 20)
        for port in self.ports:
            self.start_gateway(port)
        return self.start_lb()

    def start_gateway(self, port: int) -> None:
        argv = [sys.executable, "-m", "gateway", "--port", str(port), "--redis-url", self.redis_url]
        argv += ["--upstream", f"default=http://127.0.0.1:{self.upstream_port}/mcp"]
        argv += ["--retry-ms", "200", "--request-timeout", "5", "--drain-timeout", "5"]
        argv += ["--log-format", "text", "--log-level", self.log_level]
        # one load generator on one address is not a flood: the per-client limits off
        argv += ["--rate-limit", "0", "--max-sessions-per-client", "0", "--max-streams-per-client", "0"]
        argv += ["--metrics-port", "0"]  # replicas share this host
        for attempt in range(3):  # a shared machine: another process may hold the port for a moment
            proc = self.procs.start(f"gateway-{port}", argv, env={"MCPGW_KEY_PREFIX": self.prefix})
            try:
                proc.wait_http(f"http://127.0.0.1:{port}/healthz", 20)
                break
            except ProcessStartError:
                proc.stop()
                if attempt == 2:
                    raise
                time.sleep(1.0)
        self.gateways[port] = proc

    def start_lb(self) -> str:
        binary = haproxy_binary()
        if binary is None:
            raise ProcessStartError("haproxy is not installed: run scripts/setup")
        listen = free_port()
        text = haproxy_config([("127.0.0.1", p) for p in self.ports], listen)
        text = text.replace("retry-on conn-failure", f"retry-on {self.mode.retry_on}")
        cfg = self.procs.log_dir / f"haproxy-{listen}.cfg"
        cfg.write_text(text)
        self.procs.start(f"haproxy-{listen}", [binary, "-f", str(cfg), "-db"]).wait_port(listen, 10)
        return f"http://127.0.0.1:{listen}/mcp"

    def port_of(self, pid: int) -> int | None:
        return next((port for port, proc in self.gateways.items() if proc.pid == pid), None)

    async def executions(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as http:
            data: dict[str, int] = (await http.get(f"http://127.0.0.1:{self.upstream_port}/executions")).json()
            return data


def dump(
    path: Path, session: str, started: float, broke_at: list[float], port: int | None, outcomes: list[Any]
) -> None:
    """What the client saw in a trial that was not ok, for diagnosis beside the replicas' logs."""
    detail: dict[str, Any] = {"session": session, "broken_port": port, "copies": []}
    detail["broken_after_s"] = round(broke_at[0] - started, 4) if broke_at else None
    for outcome in outcomes:
        if isinstance(outcome, str):
            detail["copies"].append({"outcome": outcome})
            continue
        events = [
            {"connection": e.connection, "id": e.id, "at_s": round(e.at - started, 4), "data": e.data[:300]}
            for e in outcome.events
        ]
        detail["copies"].append({"statuses": outcome.statuses, "events": events})
    path.write_text(json.dumps(detail, indent=2))


async def initialize(client: CarefulClient, attempts: int = 10) -> None:
    """initialize, retrying a 503 (Retry-After: 1): after a Redis restart each replica's pooled
    connections fail once before they reconnect, and the client is told to retry."""
    for attempt in range(attempts):
        try:
            await client.initialize()
            return
        except CarefulClientError as exc:
            if " 503 " not in str(exc) or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)


async def one_call(client: CarefulClient, rid: int, tag: str, delay: float) -> tuple[Any, str]:
    """One copy of the call: its StreamResult, or a verdict word, and the failure text."""
    await asyncio.sleep(delay)
    arguments = {"steps": STEPS, "delay": DELAY, "tag": tag}
    try:
        call = client.call_tool_resumable("slow_count", arguments, resume_timeout=20, request_id=rid)
        return await asyncio.wait_for(call, timeout=30), ""
    except TimeoutError:
        return "hung", ""
    except SessionGone as exc:
        return "gone", str(exc)
    except CarefulClientError as exc:
        return ("refused" if "before any event id" in str(exc) or "POST" in str(exc) else "lost"), str(exc)


@dataclass
class Trial:
    verdict: str
    tag: str
    elapsed: float
    gap: float | None


async def trial(
    cluster: Cluster, lb: str, redis: aioredis.Redis | None, rng: random.Random, number: int, log_dir: Path
) -> Trial:
    mode = cluster.mode
    tag = f"{mode.name}-{number}"
    break_at = rng.uniform(0.0, STEPS * DELAY * 1.2)
    async with CarefulClient(lb, read_timeout=20) as client:
        await initialize(client)
        session = client.session_id
        assert session is not None
        broke_at: list[float] = []

        async def breaker() -> int | None:
            await asyncio.sleep(break_at)
            if cluster.own_redis is not None:
                await asyncio.to_thread(cluster.own_redis.restart)
                broke_at.append(time.monotonic())
                return None
            pid = None
            if redis is not None:
                with contextlib.suppress(Exception):
                    pid = await pumping_pid(redis, cluster.prefix, session, rid)
            port = cluster.port_of(pid) if pid else None
            if port is None:
                port = rng.choice(list(cluster.gateways))
            os.kill(cluster.gateways[port].pid, mode.signal)
            broke_at.append(time.monotonic())
            return port

        rid = client.next_id()
        break_task = asyncio.ensure_future(breaker())
        started = time.monotonic()
        copies = [one_call(client, rid, tag, 0.0)]
        if mode.replay:
            copies.append(one_call(client, rid, tag, rng.uniform(0.0, STEPS * DELAY)))
        results = await asyncio.gather(*copies)
        elapsed = time.monotonic() - started
        port = await break_task
    outcomes = [outcome for outcome, _ in results]
    verdict = max((classify(o, mode) for o in outcomes), key=VERDICTS.index)
    gap = None
    first = outcomes[0]
    if not isinstance(first, str) and broke_at:
        later = [e.at for e in first.events if e.connection > 0 and e.at >= broke_at[0] and e.data.strip()]
        gap = later[0] - broke_at[0] if later else None
    if verdict != "ok":
        shown = [failure if isinstance(o, str) and failure else o for o, failure in results]
        dump(log_dir / f"trial-{mode.name}-{number}.json", session, started, broke_at, port, shown)
    if port is not None:
        cluster.gateways[port].stop()
        cluster.start_gateway(port)
        await asyncio.sleep(1.2)  # HAProxy health checks (inter 500ms, rise 1) re-admit it
    else:
        await asyncio.sleep(0.5)  # the replicas' Redis connections reconnect
    return Trial(verdict, tag, elapsed, gap)


async def run_mode(mode: Mode, args: argparse.Namespace, rng: random.Random, log_dir: Path) -> dict[str, Any]:
    procs = ProcessGroup(log_dir=log_dir)
    shared_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    cluster = Cluster(procs, mode, args.replicas, shared_url, args.log_level)
    results: Counter[str] = Counter()
    trials: list[Trial] = []
    redis: aioredis.Redis | None = None
    try:
        lb = cluster.start()
        redis = aioredis.from_url(cluster.redis_url) if not mode.redis_restart else None
        await asyncio.sleep(1.0)
        for n in range(1, args.trials + 1):
            result = await trial(cluster, lb, redis, rng, n, log_dir)
            trials.append(result)
            results[result.verdict] += 1
            runs = (await cluster.executions()).get(result.tag, 0)
            shown = f", resumed after {result.gap:.2f}s" if result.gap is not None else ""
            line = (
                f"[{mode.name}] trial {n}/{args.trials}: {result.verdict}, ran {runs}x ({result.elapsed:.2f}s{shown})"
            )
            print(line, flush=True)
        await asyncio.sleep(0.5)  # a second run, if any, would have started by now
        executions = await cluster.executions()
    finally:
        procs.stop_all()
        if redis is not None:
            async for key in redis.scan_iter(match=f"{cluster.prefix}:*"):
                await redis.delete(key)
            await redis.aclose()
    twice = [t.tag for t in trials if executions.get(t.tag, 0) > 1]
    durations = [t.elapsed for t in trials]
    gaps = [t.gap for t in trials if t.gap is not None]
    summary = {
        "trials": len(trials),
        **{v: results[v] for v in VERDICTS},
        "twice": len(twice),
        "executed_twice": twice,
        "executions": sum(executions.get(t.tag, 0) for t in trials),
        "call_seconds_p50": percentile(durations, 0.5),
        "call_seconds_max": max(durations) if durations else None,
        "resumed_trials": len(gaps),
        "break_to_first_resumed_event_p50": percentile(gaps, 0.5),
        "break_to_first_resumed_event_p99": percentile(gaps, 0.99),
    }
    print(table({mode.name: summary}), flush=True)  # each mode's figures as soon as it is done
    return summary


def table(per_mode: dict[str, dict[str, Any]]) -> str:
    columns = ("trials", *VERDICTS, "twice")
    rows = [f"{'mode':<18}" + "".join(f"{c:>9}" for c in columns)]
    for name, summary in per_mode.items():
        rows.append(f"{name:<18}" + "".join(f"{summary[c]:>9}" for c in columns))
    return "\n".join(rows)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100, help="trials per mode")
    parser.add_argument("--modes", default="sigkill", help=f"comma-separated, or `all`: {', '.join(MODES)}")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log-level", default="warning", help="the replicas' log level (debug: every event)")
    args = parser.parse_args()
    names = list(MODES) if args.modes == "all" else [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [n for n in names if n not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; known: {', '.join(MODES)}")
    rng = random.Random(args.seed)
    log_dir = REPO / ".chaos-logs"
    per_mode = {name: await run_mode(MODES[name], args, rng, log_dir) for name in names}
    totals = {c: sum(s[c] for s in per_mode.values()) for c in ("trials", *VERDICTS, "twice", "executions")}
    summary = {"seed": args.seed, "replicas": args.replicas, **totals, "modes": per_mode}
    print(json.dumps(summary, indent=2))
    print(table(per_mode))
    print("lost / duplicated / hung / executed twice: " + " / ".join(str(totals[c]) for c in FAILURES))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if any(totals[c] for c in FAILURES):
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
