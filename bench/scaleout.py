"""Scale-out figures: idle streams held per replica, pumped locally and tailed from another replica.

    .venv/bin/python -m bench.scaleout --streams 19500 [--pumpers 3] [--workers 2] [--json out.json]

A fast upstream (`bench/fast_upstream.py`) serves every stream; half are standalone GETs, half
in-flight POST answers (an SSE tool call whose next event is minutes away). Phase 1: the streams are
opened on `--pumpers` replicas, which pump them (RSS delta per stream and Redis connections of
each). Phase 2: every client moves to one more replica, T, with `Last-Event-ID` (the cursor of the
priming event), so T delivers streams that other replicas pump: T's RSS delta per stream and its
Redis connections, counted by name in `CLIENT LIST` (each replica names its connections
`mcpgw:<replica id>`). Clients run in `--workers` processes and the pumps are spread over several
replicas because one process may hold at most RLIMIT_NOFILE descriptors (20,000 on the build
machine, not raisable there): a pumped stream costs its replica two, a tailed stream one. A replica
may also run several processes (`mcp-gateway --workers N`: `--pumper-processes`,
`--tailer-processes`); its figures are then the sums over its processes (RSS, Redis connections).
`--upstream-processes` does the same for the fast upstream, which holds one connection per pumped
stream.
Takeover time is measured by `scripts/chaos.py` (kill -> first resumed event).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import loadgen as lg
from bench.topology import Gateway, Topology, children, raise_nofile, tree_cpu_seconds, tree_rss_kb

CONCURRENCY = 128
POST_BODY = lg.tool_call("sse", {"events": 2, "interval_ms": 600_000})


async def redis_connections(redis_url: str, pid: int) -> int:
    """Connections Redis holds for the replica with this pid and its `--workers` processes (each
    names its connections with its own pid)."""
    client = aioredis.from_url(redis_url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    tags = [f":{p}:" for p in (pid, *children(pid))]
    return sum(1 for c in clients if any(tag in c.get("name", "") for tag in tags))


def first_event_id(chunk: bytes) -> str:
    for line in chunk.decode(errors="replace").splitlines():
        if line.startswith("id:"):
            return line[3:].strip()
    raise lg.BenchError(f"no event id in the first event: {chunk[:200]!r}")


class Streams:
    """N open SSE responses and their readers, opened with bounded concurrency."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.responses: list[aiohttp.ClientResponse] = []
        self.cursors: dict[str, str] = {}
        self.errors: list[str] = []
        self._sem = asyncio.Semaphore(CONCURRENCY)

    async def open(self, url: str, sid: str, *, post: bool, last_event_id: str | None = None) -> None:
        async with self._sem:
            try:
                if last_event_id is not None:
                    headers = lg.headers(sid, accept="text/event-stream", post=False)
                    resp = await self.http.get(url, headers={**headers, "Last-Event-ID": last_event_id})
                elif post:
                    resp = await self.http.post(url, data=lg.fresh_id(POST_BODY), headers=lg.headers(sid))
                else:
                    resp = await self.http.get(url, headers=lg.headers(sid, accept="text/event-stream", post=False))
                if resp.status != 200:
                    self.errors.append(f"HTTP {resp.status} {(await resp.read())[:120]!r}")
                    return
                first = await resp.content.readuntil(b"\n\n")  # the priming event: the stream is live
                self.cursors[sid] = first_event_id(first)
                self.responses.append(resp)
            except (aiohttp.ClientError, TimeoutError, lg.BenchError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])

    def alive(self) -> int:
        return sum(1 for r in self.responses if not r.content.at_eof() and not r.closed)

    def close(self) -> None:
        for resp in self.responses:
            resp.close()
        self.responses.clear()


def worker(index: int, pumpers: list[str], tailer: str, n: int, barrier: Any, out: Any) -> None:
    """One load-client process: its share of the sessions, both phases, barriers in between."""
    raise_nofile(65536)
    out.put(asyncio.run(worker_main(index, pumpers, tailer, n, barrier)))


async def worker_main(index: int, pumpers: list[str], tailer: str, n: int, barrier: Any) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=None, connect=60)
    stats: dict[str, Any] = {"worker": index}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as http:
        sem = asyncio.Semaphore(CONCURRENCY // 2)

        async def init(url: str) -> tuple[str, str]:
            async with sem:
                return url, await lg.initialize(http, url)

        sessions = await asyncio.gather(*(init(pumpers[(index + i) % len(pumpers)]) for i in range(n)))
        await asyncio.to_thread(barrier.wait)  # B0: sessions exist, nothing open
        await asyncio.to_thread(barrier.wait)  # B0b: the replicas' RSS before is read
        local = Streams(http)
        await asyncio.gather(*(local.open(url, sid, post=i % 2 == 1) for i, (url, sid) in enumerate(sessions)))
        stats.update(local_opened=len(local.responses), local_errors=local.errors[:3])
        stats["local_error_count"] = len(local.errors)
        await asyncio.to_thread(barrier.wait)  # B1: the pumpers hold every stream
        await asyncio.to_thread(barrier.wait)  # B2: measured
        cursors = dict(local.cursors)
        local.close()  # the pumps keep running: disconnect is not cancellation
        tailed = Streams(http)
        await asyncio.gather(*(tailed.open(tailer, sid, post=False, last_event_id=cursors[sid]) for sid in cursors))
        stats.update(tailed_opened=len(tailed.responses), tailed_errors=tailed.errors[:3])
        stats["tailed_error_count"] = len(tailed.errors)
        await asyncio.to_thread(barrier.wait)  # B3: the tailer holds every stream
        await asyncio.to_thread(barrier.wait)  # B4: measured
        stats["tailed_alive_at_end"] = tailed.alive()
        tailed.close()
    return stats


async def replica_figures(redis_url: str, gw: Gateway, before_kb: int, streams: int) -> dict[str, Any]:
    after_kb = tree_rss_kb(gw.proc.pid)
    return {
        "rss_before_kb": before_kb,
        "rss_after_kb": after_kb,
        "rss_per_stream_kb": round((after_kb - before_kb) / max(1, streams), 2),
        "redis_connections": await redis_connections(redis_url, gw.proc.pid),
    }


async def run(
    streams_n: int,
    redis_url: str,
    max_connections: int,
    settle: float,
    pumpers_n: int,
    workers_n: int,
    processes: dict[str, int],
    server: str = "uvicorn",
) -> dict[str, Any]:
    """`processes`: worker processes of each pumper, of the tailer and of the upstream (`--workers`):
    one process holds at most RLIMIT_NOFILE descriptors, a replica may run several."""
    raise_nofile(65536)
    topo = Topology(
        redis_url=redis_url,
        key_prefix=f"benchscale{os.getpid()}x{int(time.time())}",
        replicas=0,
        with_nginx=False,
        with_sdk=False,
        with_lb=False,
        fast_workers=processes["upstream"],
    )
    topo.start()
    extra = ["--upstream-pool-size", str(streams_n + 512)]
    extra += ["--stream-idle-timeout", "3600"]  # the POST answers idle for minutes while the rest opens

    def flags(role: str) -> list[str]:
        """A replica's Redis budget, split over its processes (each: its pool + 1 pub/sub + 2 heartbeat)."""
        n = processes[role]
        return [*extra, "--workers", str(n), "--redis-max-connections", str(max(4, max_connections // n - 3))]

    result: dict[str, Any] = {
        "streams": streams_n,
        "pumpers": pumpers_n,
        "workers": workers_n,
        "redis_connections_budget_per_replica": max_connections,
        "processes_per_replica": processes,
        "server": server,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers_n + 1)
    out = ctx.Queue()
    procs: list[Any] = []
    try:
        start = topo.start_gateway if server == "uvicorn" else topo.start_granian_gateway
        pumpers = [start(flags("pumper")) for _ in range(pumpers_n)]
        tailer = start(flags("tailer"))
        share = [streams_n // workers_n + (1 if i < streams_n % workers_n else 0) for i in range(workers_n)]
        for i in range(workers_n):
            proc = ctx.Process(target=worker, args=(i, [p.url for p in pumpers], tailer.url, share[i], barrier, out))
            proc.start()
            procs.append(proc)
        wait = asyncio.to_thread
        t0 = time.perf_counter()
        await wait(barrier.wait)  # B0
        result["initialize_s"] = round(time.perf_counter() - t0, 1)
        await asyncio.sleep(1.0)
        pumper_before = [tree_rss_kb(p.proc.pid) for p in pumpers]
        tailer_before = tree_rss_kb(tailer.proc.pid)
        await wait(barrier.wait)  # B0b: the clients start opening streams
        t0 = time.perf_counter()
        await wait(barrier.wait)  # B1
        result["open_local_s"] = round(time.perf_counter() - t0, 1)
        await asyncio.sleep(settle)
        per_pumper = streams_n / pumpers_n
        result["pumped_locally"] = [
            await replica_figures(redis_url, p, before, round(per_pumper))
            for p, before in zip(pumpers, pumper_before, strict=True)
        ]
        await wait(barrier.wait)  # B2
        t0 = time.perf_counter()
        await wait(barrier.wait)  # B3
        result["open_tailed_s"] = round(time.perf_counter() - t0, 1)
        await asyncio.sleep(settle)
        c0 = tree_cpu_seconds(tailer.proc.pid)
        t0 = time.monotonic()
        await asyncio.sleep(settle)
        idle_cpu = tree_cpu_seconds(tailer.proc.pid) - c0
        result["tailer_idle_cpu_pct"] = round(100 * idle_cpu / (time.monotonic() - t0), 1)
        result["tailed_from_other_replicas"] = await replica_figures(redis_url, tailer, tailer_before, streams_n)
        result["pumper_redis_connections_while_tailed"] = [
            await redis_connections(redis_url, p.proc.pid) for p in pumpers
        ]
        await wait(barrier.wait)  # B4
        workers = [await wait(out.get, True, 120) for _ in procs]
        result["workers"] = workers
        tailed = sum(w["tailed_opened"] for w in workers)
        result["tailed_from_other_replicas"]["rss_per_stream_kb"] = round(
            (result["tailed_from_other_replicas"]["rss_after_kb"] - tailer_before) / max(1, tailed), 2
        )
        result["tailed_opened"] = tailed
        result["tailed_alive_at_end"] = sum(w["tailed_alive_at_end"] for w in workers)
        result["local_opened"] = sum(w["local_opened"] for w in workers)
        for gw, name in [*((p, f"pumper{i}") for i, p in enumerate(pumpers)), (tailer, "tailer")]:
            text = gw.proc.log_path.read_text(errors="replace")
            result[f"{name}_log_errors"] = text.count("ERROR")
            result[f"{name}_takeovers"] = text.count("taking over")
    finally:
        barrier.abort()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
        topo.stop()
        with contextlib.suppress(Exception):
            client = aioredis.from_url(redis_url)
            keys = [k async for k in client.scan_iter(match=f"{topo.key_prefix}:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(*keys[i : i + 1000])
            await client.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=19_500)
    parser.add_argument("--pumpers", type=int, default=3, help="replicas the streams are first opened (pumped) on")
    parser.add_argument("--workers", type=int, default=2, help="load-client processes")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--redis-max-connections",
        type=int,
        default=64,
        help="Redis connections per replica: each of its processes gets this / processes - 3 as its pool",
    )
    parser.add_argument("--pumper-processes", type=int, default=1, help="`--workers` of each pumping replica")
    parser.add_argument("--tailer-processes", type=int, default=1, help="`--workers` of the tailing replica")
    parser.add_argument("--upstream-processes", type=int, default=1, help="`--workers` of the fast upstream")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before RSS and connections are read")
    parser.add_argument(
        "--server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="what serves the replicas (granian: bench/granian_app.py, one process each, --*-processes ignored)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.streams,
            args.redis_url,
            args.redis_max_connections,
            args.settle,
            args.pumpers,
            args.workers,
            {"pumper": args.pumper_processes, "tailer": args.tailer_processes, "upstream": args.upstream_processes},
            args.server,
        )
    )
    result["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
