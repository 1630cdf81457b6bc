"""Scale-out figures: idle streams held per replica, pumped locally and tailed from another replica.

    .venv/bin/python -m bench.scaleout --streams 20000 [--json out.json]

Two replicas share Redis; a fast upstream (`bench/fast_upstream.py`) serves every stream. Half the
streams are standalone GETs, half in-flight POST answers (an SSE tool call whose next event is
minutes away). Phase 1 opens them all on replica P, which pumps them: P's RSS delta per stream and
Redis connections. Phase 2 moves every client to replica T with `Last-Event-ID` (the cursor of the
priming event), so T delivers streams that P pumps: T's RSS delta per stream and Redis connections
(counted by name in `CLIENT LIST`: each replica names its connections `mcpgw:<replica id>`).
Takeover time is measured by `scripts/chaos.py` (kill -> first resumed event).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import loadgen as lg
from bench.topology import Gateway, Topology, raise_nofile, rss_kb

CONCURRENCY = 128
POST_BODY = lg.tool_call("sse", {"events": 2, "interval_ms": 600_000})


async def redis_connections(redis_url: str, pid: int) -> int:
    """Connections Redis holds for the replica with this pid (its connection names carry it)."""
    client = aioredis.from_url(redis_url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    return sum(1 for c in clients if f":{pid}:" in c.get("name", ""))


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
                    resp = await self.http.post(url, data=POST_BODY, headers=lg.headers(sid))
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


async def held(redis_url: str, gw: Gateway, before_kb: int, streams: Streams, settle: float) -> dict[str, Any]:
    await asyncio.sleep(settle)
    after_kb = rss_kb(gw.proc.pid)
    opened = len(streams.responses)
    return {
        "opened": opened,
        "errors": len(streams.errors),
        "first_error": streams.errors[0] if streams.errors else None,
        "alive_after_settle": streams.alive(),
        "rss_before_kb": before_kb,
        "rss_after_kb": after_kb,
        "rss_per_stream_kb": round((after_kb - before_kb) / max(1, opened), 2),
        "redis_connections": await redis_connections(redis_url, gw.proc.pid),
    }


async def run(streams_n: int, redis_url: str, max_connections: int, settle: float) -> dict[str, Any]:
    raise_nofile(max(65536, 6 * streams_n + 4096))
    topo = Topology(
        redis_url=redis_url,
        key_prefix=f"benchscale{os.getpid()}x{int(time.time())}",
        replicas=0,
        with_nginx=False,
        with_sdk=False,
        with_lb=False,
    )
    topo.start()
    extra = ["--upstream-pool-size", str(streams_n + 512), "--redis-max-connections", str(max_connections)]
    result: dict[str, Any] = {"streams": streams_n, "redis_max_connections": max_connections}
    try:
        pumper, tailer = topo.start_gateway(extra), topo.start_gateway(extra)
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=None, connect=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as http:
            sem = asyncio.Semaphore(CONCURRENCY)

            async def init() -> str:
                async with sem:
                    return await lg.initialize(http, pumper.url)

            t0 = time.perf_counter()
            sids = list(await asyncio.gather(*(init() for _ in range(streams_n))))
            result["initialize_s"] = round(time.perf_counter() - t0, 1)
            await asyncio.sleep(1.0)

            local = Streams(http)
            before = rss_kb(pumper.proc.pid)
            t0 = time.perf_counter()
            await asyncio.gather(*(local.open(pumper.url, s, post=i % 2 == 1) for i, s in enumerate(sids)))
            result["open_local_s"] = round(time.perf_counter() - t0, 1)
            result["pumped_locally"] = await held(redis_url, pumper, before, local, settle)
            cursors = dict(local.cursors)
            local.close()  # the pumps keep running on P: disconnect is not cancellation

            tailed = Streams(http)
            before = rss_kb(tailer.proc.pid)
            t0 = time.perf_counter()
            await asyncio.gather(
                *(tailed.open(tailer.url, s, post=False, last_event_id=cursors[s]) for s in sids if s in cursors)
            )
            result["open_tailed_s"] = round(time.perf_counter() - t0, 1)
            result["tailed_from_other_replica"] = await held(redis_url, tailer, before, tailed, settle)
            result["pumper_redis_connections_while_tailed"] = await redis_connections(redis_url, pumper.proc.pid)
            tailed.close()
        for gw, name in ((pumper, "pumper"), (tailer, "tailer")):
            text = gw.proc.log_path.read_text(errors="replace")
            result[f"{name}_log_errors"] = text.count("ERROR")
    finally:
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
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-max-connections", type=int, default=64)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle before RSS and connections are read")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args.streams, args.redis_url, args.redis_max_connections, args.settle))
    result["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
