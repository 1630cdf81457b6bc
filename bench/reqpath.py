"""Scenario 7: the cost of one request through ONE replica (`gw1`) against the upstream reached directly.

Figures, all from one run (the machine is shared; ratios against direct are what compare):

* CPU per JSON `tools/call`: the replica's process CPU time over the window divided by the calls
  it served (64 connections, aiohttp load client and, when installed, wrk).
* Throughput at 64 connections as a ratio of direct, for each load client; p99 at 64.
* Added p50 at 1 connection (aiohttp client, closed loop).
* Each figure is the median of `--reqpath-rounds` rounds (default 3) that measure every target
  in turn: one window moves by 15-30 % on this shared machine, the median of three much less.
* Redis commands, round trips and Redis's CPU time per JSON call and per SSE event: deltas of `INFO commandstats`
  (commands, including those run inside Lua scripts, listed by name) and of `INFO stats`
  `total_reads_processed` (one socket read by Redis ~ one round trip of a client) and of `INFO cpu`
  (`used_cpu_user` + `used_cpu_sys`: what one Redis spends on each call). Exact only on a
  Redis that nothing else uses meanwhile: run the suite with `--own-redis`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import redis

from bench import loadgen as lg
from bench.knobs import Knobs
from bench.topology import Topology, tree_cpu_seconds

# Commands the benchmark or the replica's housekeeping issue that are not part of a request.
_HOUSEKEEPING = {"info", "ping", "client|setinfo", "client|setname", "hello", "select", "script|load"}


class RedisCounter:
    """Deltas of Redis's command counters and socket reads between `start()` and `stop()`."""

    def __init__(self, url: str) -> None:
        self._r = redis.Redis.from_url(url)
        self._calls: dict[str, int] = {}
        self._reads = 0
        self._cpu = 0.0

    def _snapshot(self) -> tuple[dict[str, int], int, float]:
        stats: dict[str, Any] = self._r.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        reads = int(self._r.info("stats")["total_reads_processed"])
        cpu: dict[str, Any] = self._r.info("cpu")
        return calls, reads, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def start(self) -> None:
        self._calls, self._reads, self._cpu = self._snapshot()

    def stop(self, per: int) -> dict[str, Any]:
        calls, reads, cpu = self._snapshot()
        delta = {k: v - self._calls.get(k, 0) for k, v in calls.items()}
        delta = {k: v for k, v in delta.items() if v > 0 and k not in _HOUSEKEEPING}
        per = max(per, 1)
        return {
            "commands": round(sum(delta.values()) / per, 2),
            "round_trips": round(max(0, reads - self._reads - 3) / per, 2),  # -3: our own three INFO reads
            # Redis's own CPU time (its main thread and the kernel's work for it) per call
            "cpu_us": round(1e6 * (cpu - self._cpu) / per, 1),
            "by_command": {k: round(v / per, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])},
        }

    def close(self) -> None:
        self._r.close()


async def _aiohttp_row(url: str, sids: list[str], conns: int, duration: float, body: bytes) -> lg.LoopResult:
    async with lg.new_session(conns) as http:
        return await lg.closed_loop(
            conns, duration, lambda i: lg.call_json(http, url, sids[i % len(sids)], body), warmup=0.0
        )


async def request_path(topo: Topology, knobs: Knobs, redis_url: str) -> dict[str, Any]:
    """Direct vs gw1: CPU per call, throughput ratios (aiohttp, wrk), added p50, Redis per call and per event.

    `knobs.reqpath_rounds` rounds, each measuring every target once (in an order rotated by one
    per round); a target's figure is the median of its rounds, and a ratio or difference against
    direct is the median of the rounds' own (each taken against direct in the same round). The
    rounds' figures are kept in `rounds`."""
    urls = topo.urls("fast")
    pids = {"gw1": topo.gateways[0].proc.pid}
    if topo.granian is not None:
        urls["gw1-granian"] = topo.granian.url
        pids["gw1-granian"] = topo.granian.proc.pid
    if topo.baseline is not None:
        urls["gw1-base"] = topo.baseline.url
        pids["gw1-base"] = topo.baseline.proc.pid
    body = lg.tool_call("json", {"text": "hi"})
    counter = RedisCounter(redis_url)
    hi = max(knobs.conns)
    targets = ["direct", *pids]
    rounds: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    sse_redis: dict[str, dict[str, Any]] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            sids = {
                t: await stack.enter_async_context(lg.sessions_at(urls[t], knobs.sessions_per_target)) for t in targets
            }
            for t in targets:
                await _aiohttp_row(urls[t], sids[t], hi, 0.5, body)  # warm-up
            for n in range(max(1, knobs.reqpath_rounds)):
                for t in targets[n % len(targets) :] + targets[: n % len(targets)]:
                    rounds[t].append(await _round(urls[t], sids[t], pids.get(t, 0), hi, knobs, body, counter))
            for t in pids:
                sse_redis[t] = await _sse_redis(urls[t], sids[t], knobs, counter)
    finally:
        counter.close()
    out: dict[str, Any] = {"conns": hi, "rounds": max(1, knobs.reqpath_rounds), "rows": []}
    direct = rounds["direct"]
    for t in targets:
        row: dict[str, Any] = {"target": t, "rounds": rounds[t]}
        for key in rounds[t][0]:
            if key != "redis_per_call":
                row[key] = _median([r[key] for r in rounds[t]])
        row["errors"] = sum(r["errors"] for r in rounds[t])  # every round's: a median would hide some
        if t != "direct":
            pairs = list(zip(rounds[t], direct, strict=True))
            row["added_p50_rounds"] = [round(g["p50_1conn_ms"] - d["p50_1conn_ms"], 3) for g, d in pairs]
            row["added_p50_1conn_ms"] = round(_median(row["added_p50_rounds"]), 3)
            row["aiohttp_x_direct"] = round(
                _median([g["aiohttp_ops_per_s"] / d["aiohttp_ops_per_s"] for g, d in pairs]), 3
            )
            if knobs.use_wrk:
                row["wrk_x_direct"] = round(_median([g["wrk_ops_per_s"] / d["wrk_ops_per_s"] for g, d in pairs]), 3)
            calls = [r["redis_per_call"] for r in rounds[t]]
            row["redis_per_call"] = {
                "commands": _median([c["commands"] for c in calls]),
                "round_trips": _median([c["round_trips"] for c in calls]),
                "cpu_us": _median([c["cpu_us"] for c in calls]),
                "by_command": calls[-1]["by_command"],
            }
            row["redis_per_sse_event"] = sse_redis[t]
        out["rows"].append(row)
    return out


def _median(values: list[Any]) -> Any:
    return statistics.median(values) if values and all(isinstance(v, (int, float)) for v in values) else values[-1]


async def _round(
    url: str, sids: list[str], gw_pid: int, hi: int, knobs: Knobs, body: bytes, counter: RedisCounter
) -> dict[str, Any]:
    """One target measured once: 1 connection, then `hi` connections by aiohttp, then by wrk."""
    row: dict[str, Any] = {}
    one = await _aiohttp_row(url, sids, 1, knobs.duration, body)
    row["p50_1conn_ms"] = one.summary()["p50_ms"]
    row["p99_1conn_ms"] = one.summary()["p99_ms"]
    c0, t0 = tree_cpu_seconds(gw_pid), time.monotonic()
    counter.start()
    res = await _aiohttp_row(url, sids, hi, knobs.duration, body)
    redis_fig = counter.stop(res.completed)
    gw_cpu = tree_cpu_seconds(gw_pid) - c0
    s = res.summary()
    row.update(
        aiohttp_ops_per_s=s["ops_per_s"], aiohttp_p50_ms=s["p50_ms"], aiohttp_p99_ms=s["p99_ms"], errors=s["errors"]
    )
    if gw_pid:
        row["cpu_us_per_call"] = round(1e6 * gw_cpu / max(res.completed, 1), 1)
        row["gw_cpu_pct"] = round(100 * gw_cpu / (time.monotonic() - t0), 1)
        row["redis_per_call"] = redis_fig
    if knobs.use_wrk:
        c0 = tree_cpu_seconds(gw_pid)
        w = await lg.run_wrk(url, sids, body, conns=hi, duration=max(1, round(knobs.duration)), workdir=knobs.workdir)
        row.update(wrk_ops_per_s=w["ops_per_s"], wrk_p99_ms=w["p99_ms"], errors=row["errors"] + w["errors"])
        if gw_pid:
            row["wrk_cpu_us_per_call"] = round(1e6 * (tree_cpu_seconds(gw_pid) - c0) / max(w["ops"], 1), 1)
    return row


async def _sse_redis(url: str, sids: list[str], knobs: Knobs, counter: RedisCounter) -> dict[str, Any]:
    """Redis commands and round trips per relayed SSE event (tools/call answered with N events)."""
    events = knobs.sse_events
    async with lg.new_session(8) as http:

        async def op(i: int) -> None:
            await lg.call_sse(http, url, sids[i % len(sids)], events)
            return None

        await lg.closed_loop(8, 0.3, op, warmup=0.0)
        counter.start()
        res = await lg.closed_loop(8, min(knobs.duration, 2.0), op, warmup=0.0)
        fig = counter.stop(res.completed * events)
    return {**fig, "events_per_call": events, "calls": res.completed}
