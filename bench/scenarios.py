"""The benchmark scenarios. Each returns a JSON-able dict; the suite assembles and reports them.

This module holds the request/response scenarios (1. tools/call -> JSON, 2. tools/call -> SSE,
3. session churn) and their CPU-metered, disturbance-checked measurement; the streaming ones
(4. resume, 5. idle streams, 6. httpx vs aiohttp) live in bench/stream_scenarios.py and `Knobs`
in bench/knobs.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import loadgen as lg
from bench.knobs import Knobs
from bench.topology import CpuMeter, Topology


def _cpu(topo: Topology, upstream: str = "fast") -> CpuMeter:
    pids = topo.pids(upstream)
    pids["redis"] = topo.redis_pid()
    return CpuMeter(pids)


async def _warm(url: str, sids: list[str], conns: int, body: bytes) -> None:
    async with lg.new_session(conns) as http:
        await lg.closed_loop(conns, 0.3, lambda i: lg.call_json(http, url, sids[i % len(sids)], body), warmup=0.0)


def _relevant_cpu(cpu: dict[str, float], target: str) -> dict[str, float]:
    """The processes on this row's path, plus "other": machine CPU used by anything not ours."""
    ours = sum(v for k, v in cpu.items() if k != "system")
    cpu = {**cpu, "other": round(max(0.0, cpu.get("system", 0.0) - ours), 1)}
    keep = {"redis", "bench-client", "upstream", "other"}
    if target == "nginx":
        keep.add("nginx")
    if target.startswith("gw"):
        keep |= {k for k in cpu if k.startswith("gateway")}
    if target.endswith("+lb"):
        keep.add("haproxy")
    return {k: v for k, v in cpu.items() if k in keep and v > (3.0 if k == "other" else 0.5)}


DISTURBED = 10.0  # % of a core used by processes outside the benchmark: re-measure the row once
RETRY_BUDGET = [45.0]  # seconds of re-measurement per suite run, so a busy machine cannot stretch it much


def _other(cpu: dict[str, float]) -> float:
    return max(0.0, cpu.get("system", 0.0) - sum(v for k, v in cpu.items() if k != "system"))


async def _steady(
    measure: Callable[[], Awaitable[tuple[dict[str, Any], dict[str, float]]]],
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run `measure`; when something else on the machine took > DISTURBED % of a core meanwhile,
    run it once more and keep the less disturbed of the two (the row records both facts)."""
    best: tuple[dict[str, Any], dict[str, float], float] | None = None
    attempts = 0
    for _ in range(2):
        attempts += 1
        t0 = time.monotonic()
        row, cpu = await measure()
        other = _other(cpu)
        if best is None or other < best[2]:
            best = (row, cpu, other)
        if other <= DISTURBED or RETRY_BUDGET[0] <= 0:
            break
        RETRY_BUDGET[0] -= time.monotonic() - t0
    assert best is not None
    row, cpu, other = best
    return {**row, "other_cpu_pct": round(other, 1), "attempts": attempts}, cpu


# ---------------------------------------------------------------- 1. tools/call -> JSON


async def json_calls(
    topo: Topology, knobs: Knobs, *, upstream: str = "fast", duration: float | None = None
) -> dict[str, Any]:
    """Closed-loop tools/call answered with JSON (fast upstream) or the SDK server's answer."""
    duration = duration or knobs.duration
    body = lg.tool_call("json", {"text": "hi"}) if upstream == "fast" else lg.tool_call("echo", {"text": "hi"})
    rows: list[dict[str, Any]] = []
    for target, url in topo.urls(upstream).items():
        async with lg.sessions_at(url, knobs.sessions_per_target) as sids:
            for conns in knobs.conns:

                async def measure(
                    url: str = url, sids: list[str] = sids, conns: int = conns
                ) -> tuple[dict[str, Any], dict[str, float]]:
                    await _warm(url, sids, conns, body)
                    meter = _cpu(topo, upstream)
                    meter.start()
                    if knobs.use_wrk:
                        row = await lg.run_wrk(
                            url, sids, body, conns=conns, duration=max(1, round(duration)), workdir=knobs.workdir
                        )
                    else:
                        async with lg.new_session(conns) as http:
                            res = await lg.closed_loop(
                                conns, duration, lambda i: lg.call_json(http, url, sids[i % len(sids)], body)
                            )
                        row = {**res.summary(), "loadgen": "aiohttp"}
                    cpu = meter.stop()
                    if "loadgen_cpu_pct" in row:
                        cpu["wrk"] = row.pop("loadgen_cpu_pct")
                    return row, cpu

                row, cpu = await _steady(measure)
                rows.append({"target": target, **row, "cpu_pct": _relevant_cpu(cpu, target) | _only(cpu, "wrk")})
    return {"upstream": upstream, "rows": rows}


def _only(d: dict[str, float], key: str) -> dict[str, float]:
    return {key: d[key]} if key in d else {}


async def client_ceiling(topo: Topology, knobs: Knobs) -> dict[str, Any]:
    """The aiohttp client's own ceiling: JSON calls straight at the fast upstream, 64 connections."""
    url = topo.urls("fast")["direct"]
    conns = max(knobs.conns)
    async with lg.sessions_at(url, 8) as sids, lg.new_session(conns) as http:
        meter = _cpu(topo)
        meter.start()
        res = await lg.closed_loop(conns, knobs.duration, lambda i: lg.call_json(http, url, sids[i % len(sids)]))
        cpu = meter.stop()
    return {**res.summary(), "cpu_pct": {"bench-client": cpu["bench-client"], "upstream": cpu.get("upstream", 0)}}


# ---------------------------------------------------------------- 2. tools/call -> SSE


async def sse_calls(topo: Topology, knobs: Knobs) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for target, url in topo.urls("fast").items():
        async with lg.sessions_at(url, knobs.sessions_per_target) as sids:
            for conns in knobs.conns:

                async def measure(
                    url: str = url, sids: list[str] = sids, conns: int = conns
                ) -> tuple[dict[str, Any], dict[str, float]]:
                    async with lg.new_session(conns) as http:

                        async def op(i: int) -> list[float]:
                            got = await lg.call_sse(http, url, sids[i % len(sids)], knobs.sse_events)
                            return [ns / 1e9 for ns in got.one_way_ns]

                        await lg.closed_loop(conns, 0.3, op, warmup=0.0)
                        meter = _cpu(topo)
                        meter.start()
                        res = await lg.closed_loop(conns, knobs.duration, op)
                        cpu = meter.stop()
                    s = res.summary()
                    s["event_p50"] = lg.ms(lg.pct(res.extra, 50))
                    s["event_p99"] = lg.ms(lg.pct(res.extra, 99))
                    return s, cpu

                s, cpu = await _steady(measure)
                rows.append(
                    {
                        "target": target,
                        "conns": conns,
                        "events_per_call": knobs.sse_events,
                        "calls_per_s": s["ops_per_s"],
                        "events_per_s": round(s["ops_per_s"] * knobs.sse_events, 1),
                        "e2e_p50_ms": s["p50_ms"],
                        "e2e_p99_ms": s["p99_ms"],
                        "per_event_ms": round(s["p50_ms"] / knobs.sse_events, 3),
                        "event_latency_p50_ms": s["event_p50"],
                        "event_latency_p99_ms": s["event_p99"],
                        "errors": s["errors"],
                        "other_cpu_pct": s["other_cpu_pct"],
                        "attempts": s["attempts"],
                        **({"first_error": s["first_error"]} if "first_error" in s else {}),
                        "cpu_pct": _relevant_cpu(cpu, target),
                    }
                )
    return {"rows": rows}


# ---------------------------------------------------------------- 3. session churn


async def churn(topo: Topology, knobs: Knobs) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for target, url in topo.urls("fast").items():
        for conns in knobs.conns:

            async def measure(url: str = url, conns: int = conns) -> tuple[dict[str, Any], dict[str, float]]:
                async with lg.new_session(conns) as http:

                    async def op(i: int) -> None:
                        sid = await lg.initialize(http, url, notify=False)
                        await lg.call_json(http, url, sid)
                        await lg.delete(http, url, sid)

                    meter = _cpu(topo)
                    meter.start()
                    res = await lg.closed_loop(conns, knobs.duration, op)
                    cpu = meter.stop()
                return res.summary(), cpu

            s, cpu = await _steady(measure)
            rows.append(
                {
                    "target": target,
                    "conns": conns,
                    "sessions_per_s": s["ops_per_s"],
                    "iteration_p50_ms": s["p50_ms"],
                    "iteration_p99_ms": s["p99_ms"],
                    "errors": s["errors"],
                    "other_cpu_pct": s["other_cpu_pct"],
                    "attempts": s["attempts"],
                    **({"first_error": s["first_error"]} if "first_error" in s else {}),
                    "cpu_pct": _relevant_cpu(cpu, target),
                }
            )
    return {"rows": rows}
