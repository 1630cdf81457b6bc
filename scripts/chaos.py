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
                    restarted mid-call, losing everything: the client must be told (a gap); single only
  drop              nothing is broken: the client drops the stream after a random number of events
                    and resumes through the load balancer (round robin: on another replica); the
                    upstream has no event store, so a wrongful takeover would end the call in error

`--store single|sentinel|cluster`: the shared Redis (REDIS_URL, default 127.0.0.1:6379, under a key
prefix of its own), or chaos's own primary + replica + three Sentinels, or its own 3-primary Cluster
(one replica each), on free ports (scripts/chaos_stores.py). Every takeover the replicas log is
counted: `wrongful` when its previous holder was not a replica chaos broke (in `drop` mode, any).

Every trial is classified (the worst of its copies):

  ok        result received, every progress notification exactly once and in order
  gap       the loss was reported: a JSON-RPC error naming it, or 404 for a session the store lost
  errored   the request was answered with a JSON-RPC error (e.g. the upstream could not resume)
  refused   the call broke before its first event (nothing to resume; the client sees an error)
  lost      a progress notification or the result never arrived, silently
  dup       a notification or an event id arrived twice
  hung      no final answer within the deadline

In `drop` mode nothing may go wrong at all: an `errored` trial there counts as a failure.

and the upstream's executions of its tag are counted (`twice`: the tool ran more than once).
Every trial that is not ok leaves `.chaos-logs/trial-<store>-<mode>-<n>.json`: the session id, the break
time and every event the client saw (connection, id, arrival time, message), to read beside the
replicas' logs (`--log-level debug` for the gateway's per-event lines).

Usage: .venv/bin/python scripts/chaos.py --trials 100 [--modes all] [--store cluster] [--replicas 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.store.keys import Keys  # noqa: E402
from scripts.chaos_replicas import MODES, Cluster, Mode  # noqa: E402
from scripts.chaos_stores import STORES, Store, start_store, takeovers  # noqa: E402
from tests.integration.careful_client import (  # noqa: E402
    CarefulClient,
    CarefulClientError,
    ReceivedEvent,
    SessionGone,
)
from tests.integration.procs import (  # noqa: E402
    ProcessGroup,
)

STEPS = 10
DELAY = 0.05
DROP_DELAY = 0.1  # `drop` steps: the resume must find the stream still pumped elsewhere to test liveness
PROGRESS = "notifications/progress"
VERDICTS = ("ok", "gap", "errored", "refused", "lost", "dup", "hung")  # in order of severity
FAILURES = ("lost", "dup", "hung", "twice", "wrongful")


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


async def one_call(
    client: CarefulClient, rid: int, tag: str, delay: float, drop_after: int | None = None, resume_delay: float = 0.0
) -> tuple[Any, str]:
    """One copy of the call: its StreamResult, or a verdict word, and the failure text. With
    `drop_after`, the client closes its first connection after that many progress events."""
    await asyncio.sleep(delay)
    arguments = {"steps": STEPS, "delay": DELAY if drop_after is None else DROP_DELAY, "tag": tag}

    def drop(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
        progress = [e for e in events if isinstance(e.message, dict) and e.message.get("method") == PROGRESS]
        return drop_after is not None and event.connection == 0 and len(progress) >= drop_after

    try:
        call = client.call_tool_resumable(
            "slow_count",
            arguments,
            resume_timeout=20,
            request_id=rid,
            drop_when=drop if drop_after is not None else None,
            resume_delay=resume_delay,
        )
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
    connections: int  # of the first copy: 2 or more when it resumed


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
            if mode.drop:
                return None  # nothing is broken: the client drops its own stream
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
            cluster.broken.add(cluster.gateways[port].pid)
            os.kill(cluster.gateways[port].pid, mode.signal)
            broke_at.append(time.monotonic())
            return port

        rid = client.next_id()
        break_task = asyncio.ensure_future(breaker())
        started = time.monotonic()
        drop_after = rng.randint(1, STEPS - 4) if mode.drop else None  # 0.4 s or more still to pump
        copies = [one_call(client, rid, tag, 0.0, drop_after, rng.uniform(0.0, 0.3))]
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
        dump(log_dir / f"trial-{cluster.store_name}-{mode.name}-{number}.json", session, started, broke_at, port, shown)
    if port is not None:
        cluster.gateways[port].stop()
        cluster.start_gateway(port)
        await asyncio.sleep(1.2)  # HAProxy health checks (inter 500ms, rise 1) re-admit it
    elif not mode.drop:
        await asyncio.sleep(0.5)  # the replicas' Redis connections reconnect
    return Trial(verdict, tag, elapsed, gap, 0 if isinstance(first, str) else first.connections)


async def run_mode(
    mode: Mode, args: argparse.Namespace, rng: random.Random, log_dir: Path, store: Store
) -> dict[str, Any]:
    procs = ProcessGroup(log_dir=log_dir)
    cluster = Cluster(procs, mode, args.replicas, store, args.log_level)
    results: Counter[str] = Counter()
    trials: list[Trial] = []
    redis: Any = None
    counted = None
    try:
        lb = cluster.start()
        redis = store.client() if not mode.redis_restart else None
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
        await asyncio.sleep(1.0)  # a second run, or a late takeover, would have started by now
        executions = await cluster.executions()
        if mode.drop:  # no replica restarted: their counters hold every takeover
            counted = await cluster.takeovers_counted()
    finally:
        procs.stop_all()
        if redis is not None:
            doomed = [key async for key in redis.scan_iter(match=f"{cluster.prefix}:*")]
            for key in doomed:
                await redis.delete(key)
            await redis.aclose()
    taken = takeovers(cluster.logs, cluster.broken)
    for line in taken.evidence:
        print(f"[{mode.name}] WRONGFUL TAKEOVER: {line}", flush=True)
    twice = [t.tag for t in trials if executions.get(t.tag, 0) > 1]
    durations = [t.elapsed for t in trials]
    gaps = [t.gap for t in trials if t.gap is not None]
    # nothing was broken in `drop`: every takeover is wrongful, whether logged or only counted
    wrongful = max(taken.wrongful, counted or 0)
    summary = {
        "trials": len(trials),
        **{v: results[v] for v in VERDICTS},
        "twice": len(twice),
        "wrongful": wrongful,
        "errored_unbroken": results["errored"] if mode.drop else 0,  # nothing broken, yet an error
        "takeovers": taken.right + taken.wrongful,
        "takeover_reasons": taken.reasons,
        "takeovers_metric": counted,
        "executed_twice": twice,
        "executions": sum(executions.get(t.tag, 0) for t in trials),
        "call_seconds_p50": percentile(durations, 0.5),
        "call_seconds_max": max(durations) if durations else None,
        "resumed_trials": sum(t.connections >= 2 for t in trials),
        "break_to_first_resumed_event_p50": percentile(gaps, 0.5),
        "break_to_first_resumed_event_p99": percentile(gaps, 0.99),
    }
    print(table({mode.name: summary}), flush=True)  # each mode's figures as soon as it is done
    return summary


def table(per_mode: dict[str, dict[str, Any]]) -> str:
    columns = ("trials", *VERDICTS, "twice", "wrongful")
    rows = [f"{'mode':<18}" + "".join(f"{c:>9}" for c in columns)]
    for name, summary in per_mode.items():
        rows.append(f"{name:<18}" + "".join(f"{summary[c]:>9}" for c in columns))
    return "\n".join(rows)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100, help="trials per mode")
    parser.add_argument("--modes", default="sigkill", help=f"comma-separated, or `all`: {', '.join(MODES)}")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--store", choices=STORES, default="single", help="the Redis topology (see above)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log-level", default="warning", help="the replicas' log level (debug: every event)")
    args = parser.parse_args()
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM cancels the run, so every process it started is stopped (by pid) on the way out
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    everything = [m for m in MODES if args.store == "single" or not MODES[m].redis_restart]
    names = everything if args.modes == "all" else [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [n for n in names if n not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; known: {', '.join(MODES)}")
    if args.store != "single" and any(MODES[n].redis_restart for n in names):
        parser.error("redis-restart restarts a single redis-server of chaos's own: --store single only")
    rng = random.Random(args.seed)
    log_dir = REPO / ".chaos-logs"
    topology = ProcessGroup(log_dir=log_dir)
    store = start_store(args.store, topology, os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        per_mode = {name: await run_mode(MODES[name], args, rng, log_dir, store) for name in names}
    finally:
        topology.stop_all()
        store.close()
    counted = ("trials", *VERDICTS, "twice", "wrongful", "errored_unbroken", "takeovers", "executions")
    totals = {c: sum(s[c] for s in per_mode.values()) for c in counted}
    summary = {"seed": args.seed, "replicas": args.replicas, "store": args.store, **totals, "modes": per_mode}
    print(json.dumps(summary, indent=2))
    print(table(per_mode))
    print(
        "lost / duplicated / hung / executed twice / wrongful takeovers: "
        + " / ".join(str(totals[c]) for c in FAILURES)
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    if totals["errored_unbroken"]:
        print(f"errored although nothing was broken (drop mode): {totals['errored_unbroken']}")
    if any(totals[c] for c in FAILURES) or totals["errored_unbroken"]:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
