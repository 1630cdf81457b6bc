"""The streaming benchmark scenarios: 4. resume, 5. idle streams, 6. httpx vs aiohttp.

Each returns a JSON-able dict; the suite reaches them through bench/scenarios.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

import aiohttp
import httpx
import redis.asyncio as aioredis

from bench import loadgen as lg
from bench.knobs import Knobs
from bench.topology import Topology, cpu_seconds, rss_kb, system_busy_seconds
from gateway.upstream import http1

# ---------------------------------------------------------------- 4. resume


async def resume(topo: Topology, knobs: Knobs, redis_url: str) -> dict[str, Any]:
    """1,000 events buffered in the gateway; resume on another replica from the first one."""
    gws = topo.gateways
    a, b = gws[0], gws[1 % len(gws)]
    n = knobs.resume_events
    redis = aioredis.from_url(redis_url)
    first_ms: list[float] = []
    last_ms: list[float] = []
    pumped_ms: list[float] = []
    errors: list[str] = []
    try:
        async with lg.new_session(4) as http:
            for _ in range(knobs.resume_reps):
                try:
                    sid = await lg.initialize(http, a.url)
                    t0 = time.perf_counter()
                    async with http.post(
                        a.url, data=lg.tool_call("sse", {"events": n}), headers=lg.headers(sid)
                    ) as resp:
                        if resp.status != 200:
                            raise lg.BenchError(f"POST: HTTP {resp.status}")
                        got = await lg.read_sse(resp, stop_after=1, timing=False)
                        resp.close()  # disconnect after the first event; the gateway keeps pumping
                    first_id = got.events[0][0]
                    if not first_id:
                        raise lg.BenchError("first event has no id")
                    stream = first_id.rsplit(".", 1)[0]
                    meta = f"{topo.key_prefix}:{{{sid}}}:m:{stream}"
                    deadline = time.monotonic() + 30
                    while await redis.hget(meta, "done") != b"1":
                        if time.monotonic() > deadline:
                            raise lg.BenchError("the gateway did not pump the stream within 30 s")
                        await asyncio.sleep(0.002)
                    pumped_ms.append((time.perf_counter() - t0) * 1000)
                    h = lg.headers(sid, accept="text/event-stream", post=False)
                    h["Last-Event-ID"] = first_id
                    t1 = time.perf_counter()
                    async with http.get(b.url, headers=h) as resp:
                        if resp.status != 200:
                            raise lg.BenchError(f"resume GET: HTTP {resp.status}")
                        replay = await lg.read_sse(resp, timing=False, until_id_suffix=f".{n}")
                    if len(replay.events) != n - 1:
                        raise lg.BenchError(f"replayed {len(replay.events)} events, expected {n - 1}")
                    first_ms.append((replay.first_at - t1) * 1000)
                    last_ms.append((replay.last_at - t1) * 1000)
                    await lg.delete(http, a.url, sid)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await redis.aclose()
    return {
        "events": n,
        "reps": len(first_ms),
        "post_replica": a.port,
        "resume_replica": b.port,
        "first_p50_ms": round(lg.pct(first_ms, 50), 3),
        "first_p99_ms": round(lg.pct(first_ms, 99), 3),
        "last_p50_ms": round(lg.pct(last_ms, 50), 3),
        "last_p99_ms": round(lg.pct(last_ms, 99), 3),
        "pump_all_p50_ms": round(lg.pct(pumped_ms, 50), 3),
        "pump_all_p99_ms": round(lg.pct(pumped_ms, 99), 3),
        "errors": len(errors),
        **({"first_error": errors[0]} if errors else {}),
    }


async def resume_direct(topo: Topology, knobs: Knobs) -> dict[str, Any]:
    """Reference: the fast upstream regenerating the same replay itself (no store involved)."""
    url = topo.urls("fast")["direct"]
    n = knobs.resume_events
    first_ms: list[float] = []
    last_ms: list[float] = []
    async with lg.new_session(2) as http:
        sid = await lg.initialize(http, url)
        for _ in range(min(knobs.resume_reps, 10)):
            async with http.post(url, data=lg.tool_call("sse", {"events": n}), headers=lg.headers(sid)) as resp:
                got = await lg.read_sse(resp, timing=False)
            h = lg.headers(sid, accept="text/event-stream", post=False)
            h["Last-Event-ID"] = got.events[0][0] or ""
            t1 = time.perf_counter()
            async with http.get(url, headers=h) as resp:
                replay = await lg.read_sse(resp, timing=False)
            first_ms.append((replay.first_at - t1) * 1000)
            last_ms.append((replay.last_at - t1) * 1000)
    return {
        "first_p50_ms": round(lg.pct(first_ms, 50), 3),
        "last_p50_ms": round(lg.pct(last_ms, 50), 3),
        "last_p99_ms": round(lg.pct(last_ms, 99), 3),
    }


# ---------------------------------------------------------------- 5. idle streams


async def idle_streams(topo: Topology, knobs: Knobs) -> dict[str, Any]:
    phases = []
    for n, keepalive, seconds in knobs.idle_phases:
        phases.append(await idle_phase(topo, n, keepalive, seconds))
    return {"phases": phases}


async def idle_phase(topo: Topology, n: int, keepalive: float, idle_seconds: float) -> dict[str, Any]:
    """N standalone GET streams on one dedicated replica: RSS per stream, keep-alive CPU.

    `--upstream-pool-size` is raised above N: the default (256) caps open upstream connections,
    so stream 257 would wait for a free connection until the request timeout.
    """
    gw = topo.start_gateway(["--keepalive-interval", str(keepalive), "--upstream-pool-size", str(n + 512)])
    pid = gw.proc.pid
    url = gw.url
    conc = 128
    result: dict[str, Any] = {
        "streams": n,
        "keepalive_interval_s": keepalive,
        "replica_port": gw.port,
        "log": str(gw.proc.log_path.name),
    }
    try:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=30), auto_decompress=False
        ) as http:
            sem = asyncio.Semaphore(conc)

            async def init() -> str:
                async with sem:
                    return await lg.initialize(http, url)

            t0 = time.perf_counter()
            sids = list(await asyncio.gather(*(init() for _ in range(n))))
            result["initialize_s"] = round(time.perf_counter() - t0, 2)
            # Warm-up: one stream opened and closed, so the first-use costs are not counted per stream.
            await asyncio.sleep(0.5)
            rss_before = rss_kb(pid)
            opened: list[aiohttp.ClientResponse] = []
            readers: list[asyncio.Task[None]] = []
            keepalives = 0
            data_bytes = 0

            async def reader(resp: aiohttp.ClientResponse) -> None:
                nonlocal keepalives, data_bytes
                with contextlib.suppress(Exception):
                    async for chunk in resp.content.iter_any():
                        keepalives += chunk.count(b": keep-alive")
                        data_bytes += len(chunk)

            async def open_one(sid: str) -> None:
                async with sem:
                    resp = await http.get(url, headers=lg.headers(sid, accept="text/event-stream", post=False))
                    if resp.status != 200:
                        body = await resp.read()
                        raise lg.BenchError(f"GET stream: HTTP {resp.status} {body[:200]!r}")
                    # 2025-11-25: the priming event arrives at once; wait for it so the stream is live.
                    await resp.content.readuntil(b"\n\n")
                    opened.append(resp)
                    readers.append(asyncio.create_task(reader(resp)))

            t0 = time.perf_counter()
            outcomes = await asyncio.gather(*(open_one(s) for s in sids), return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            result["open_s"] = round(time.perf_counter() - t0, 2)
            result["opened"] = len(opened)
            result["open_errors"] = len(failures)
            if failures:
                result["first_error"] = f"{type(failures[0]).__name__}: {failures[0]}"[:300]
            await asyncio.sleep(2.0)
            rss_after = rss_kb(pid)
            result["alive_at_rss"] = sum(1 for t in readers if not t.done())
            result["rss_before_kb"] = rss_before
            result["rss_after_kb"] = rss_after
            result["rss_per_stream_kb"] = round((rss_after - rss_before) / max(1, len(opened)), 2)
            # Idle window: nothing but keep-alives (and lease heartbeats) flow.
            ka0 = keepalives
            c0 = cpu_seconds(pid)
            r0 = cpu_seconds(topo.redis_pid())
            s0, b0 = system_busy_seconds(), time.process_time()
            t0 = time.monotonic()
            await asyncio.sleep(idle_seconds)
            wall = time.monotonic() - t0
            result["idle_window_s"] = round(wall, 2)
            result["gateway_cpu_pct"] = round(100 * (cpu_seconds(pid) - c0) / wall, 1)
            result["redis_cpu_pct"] = round(100 * (cpu_seconds(topo.redis_pid()) - r0) / wall, 1)
            ours = result["gateway_cpu_pct"] + result["redis_cpu_pct"] + 100 * (time.process_time() - b0) / wall
            result["other_cpu_pct"] = round(max(0.0, 100 * (system_busy_seconds() - s0) / wall - ours), 1)
            result["keepalives_per_s"] = round((keepalives - ka0) / wall, 1)
            result["gateway_cpu_us_per_stream_per_s"] = round(
                1e6 * (result["gateway_cpu_pct"] / 100) / max(1, len(opened)), 2
            )
            result["alive_after_idle"] = sum(1 for t in readers if not t.done())
            for resp in opened:
                resp.close()
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

            async def drop(sid: str) -> None:
                async with sem:
                    with contextlib.suppress(Exception):
                        await lg.delete(http, url, sid)

            await asyncio.gather(*(drop(s) for s in sids))
    finally:
        gw.proc.stop()
        gc.collect()
    log_text = gw.proc.log_path.read_text(errors="replace")
    result["gateway_log_errors"] = log_text.count("ERROR")
    result["gateway_log_max_connections_errors"] = log_text.count("MaxConnectionsError")
    return result


# ---------------------------------------------------------------- 6. httpx vs aiohttp


def _count_events(buf: bytes, chunk: bytes) -> tuple[int, bytes]:
    buf += chunk
    n = buf.count(b"\n\n")
    return n, buf[buf.rfind(b"\n\n") + 2 :] if n else buf


async def upstream_clients(topo: Topology, knobs: Knobs) -> dict[str, Any]:
    """64 concurrent SSE streams of 200 events from the fast upstream: aiohttp vs httpx vs the
    gateway's own HTTP/1.1 client (gateway/upstream/http1.py)."""
    url = topo.urls("fast")["direct"]
    streams, events = knobs.client_streams, knobs.client_events
    body = lg.tool_call("sse", {"events": events})
    setup = aiohttp.ClientSession()
    try:
        sid = await lg.initialize(setup, url)
    finally:
        await setup.close()
    hdrs = lg.headers(sid)

    async def with_aiohttp(http: aiohttp.ClientSession) -> float:
        t0 = time.perf_counter()
        got, buf = 0, b""
        async with http.post(url, data=body, headers=hdrs) as resp:
            async for chunk in resp.content.iter_any():
                n, buf = _count_events(buf, chunk)
                got += n
        if got != events:
            raise lg.BenchError(f"aiohttp: {got} events")
        return time.perf_counter() - t0

    async def with_httpx(http: httpx.AsyncClient) -> float:
        t0 = time.perf_counter()
        got, buf = 0, b""
        async with http.stream("POST", url, content=body, headers=hdrs) as resp:
            async for chunk in resp.aiter_raw():
                n, buf = _count_events(buf, chunk)
                got += n
        if got != events:
            raise lg.BenchError(f"httpx: {got} events")
        return time.perf_counter() - t0

    async def with_http1(pool: http1.Http1Pool) -> float:
        t0 = time.perf_counter()
        got, buf = 0, b""
        response = await pool.request("POST", url, hdrs, body)
        async for chunk in response.iter_chunks():
            n, buf = _count_events(buf, chunk)
            got += n
        if got != events:
            raise lg.BenchError(f"http1: {got} events")
        return time.perf_counter() - t0

    names = ("aiohttp", "httpx", "http1")
    results: dict[str, dict[str, list[float]]] = {
        name: {"stream_s": [], "round_s": [], "cpu_s": [], "upstream_cpu_s": []} for name in names
    }
    h_pool = http1.Http1Pool(connect_timeout=5, limit_per_host=streams)
    a_http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=streams), timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False
    )
    x_http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=streams, max_keepalive_connections=streams), timeout=60.0
    )
    up_pid = topo.fast.pid if topo.fast else 0
    try:
        for rnd in range(knobs.client_rounds + 1):  # round 0 warms both clients up
            order = names if rnd % 2 == 0 else tuple(reversed(names))
            for name in order:
                gc.collect()
                c0, u0, t0 = time.process_time(), cpu_seconds(up_pid), time.perf_counter()
                if name == "aiohttp":
                    times = await asyncio.gather(*(with_aiohttp(a_http) for _ in range(streams)))
                elif name == "httpx":
                    times = await asyncio.gather(*(with_httpx(x_http) for _ in range(streams)))
                else:
                    times = await asyncio.gather(*(with_http1(h_pool) for _ in range(streams)))
                wall = time.perf_counter() - t0
                if rnd == 0:
                    continue
                r = results[name]
                r["stream_s"].extend(times)
                r["round_s"].append(wall)
                r["cpu_s"].append(time.process_time() - c0)
                r["upstream_cpu_s"].append(cpu_seconds(up_pid) - u0)
    finally:
        await a_http.close()
        await x_http.aclose()
        await h_pool.close()
    out: dict[str, Any] = {"streams": streams, "events_per_stream": events, "rounds": knobs.client_rounds}
    for name, r in results.items():
        total_events = streams * events * len(r["round_s"])
        wall = sum(r["round_s"])
        out[name] = {
            "events_per_s": round(total_events / wall, 1) if wall else 0.0,
            "stream_p50_ms": lg.ms(lg.pct(r["stream_s"], 50)),
            "stream_p99_ms": lg.ms(lg.pct(r["stream_s"], 99)),
            "client_cpu_us_per_event": round(1e6 * sum(r["cpu_s"]) / total_events, 2) if total_events else 0.0,
            "upstream_cpu_pct": round(100 * sum(r["upstream_cpu_s"]) / wall, 1) if wall else 0.0,
        }
    return out
