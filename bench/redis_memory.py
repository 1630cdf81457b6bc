"""Redis bytes per idle session, per JSON call and per streamed call (docs/hardening.md, "Redis memory").

    python -m bench.redis_memory [--sessions 200] [--calls 1000] [--events 5] [--retention 40]
                                 [--redis-arg=--NAME=VALUE]

Starts a private redis-server (nothing else writes to it), the fast upstream and one gateway
replica with `--stream-retention RETENTION`, then measures in steps: N idle sessions; JSON calls
spread over them; streamed calls (SSE answers of EVENTS events), inside the retention window and
again once it passed; and finally a DELETE of every session. Each figure is the growth of the sum
of `MEMORY USAGE` over the gateway's keys (what the keys hold, allocator overhead included), with
`INFO memory` used_memory's growth beside it (what the server as a whole grew by).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.topology import NO_CLIENT_LIMITS, NO_METRICS_LISTENER, PY, RESULTS
from tests.integration.procs import ProcessGroup, free_port

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PREFIX = "memb"


async def usage(redis: aioredis.Redis, kinds: dict[str, int] | None = None) -> tuple[int, int, int]:
    """(keys of the gateway, sum of their MEMORY USAGE, the server's used_memory); `kinds` gets
    the bytes per kind of key (the name's last part but one for stream keys: `x`, `m`)."""
    total = count = 0
    async for key in redis.scan_iter(match=f"{PREFIX}:*", count=1000):
        size = await redis.memory_usage(key, samples=0)
        if size is not None:
            total += int(size)
            count += 1
            if kinds is not None:
                parts = key.decode().split(":")
                kind = parts[-2] if parts[-2] in ("x", "m", "lease") else parts[-1]
                kinds[kind] = kinds.get(kind, 0) + int(size)
    info = await redis.info("memory")
    return count, total, int(info["used_memory"])


async def one_stream(redis: aioredis.Redis) -> dict[str, int]:
    """One ended stream's log: its entries, the bytes they carry, and what the key costs."""
    async for key in redis.scan_iter(match=f"{PREFIX}:*:x:*", count=1000):
        entries: Any = await redis.xrange(key)
        payload = sum(len(k) + len(v) for _, fields in entries for k, v in fields.items())
        meta = key.replace(b":x:", b":m:")
        return {
            "entries": len(entries),
            "payload_bytes": payload,
            "stream_memory_usage": int(await redis.memory_usage(key, samples=0) or 0),
            "meta_memory_usage": int(await redis.memory_usage(meta, samples=0) or 0),
            "ttl_ms": int(await redis.pttl(key)),
        }
    return {}


async def call(http: httpx.AsyncClient, url: str, sid: str, rid: int, name: str, events: int) -> None:
    headers = {**HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-06-18"}
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name}}
    if name == "sse":
        body["params"]["arguments"] = {"events": events}
    response = await http.post(url, headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream" if name == "sse" else "application/json")


async def measure(url: str, redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    redis = aioredis.Redis.from_url(redis_url)
    out: dict[str, Any] = {"sessions": args.sessions, "calls": args.calls, "events": args.events}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        before = await usage(redis)
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "b", "version": "1"},
            },
        }

        async def session() -> str:
            response = await http.post(url, headers=HEADERS, json=init)
            assert response.status_code == 200, response.text
            return str(response.headers["mcp-session-id"])

        sids = list(await asyncio.gather(*(session() for _ in range(args.sessions))))
        steps = {"idle session": (before, await usage(redis), args.sessions)}

        async def calls(name: str, first_id: int) -> None:
            for start in range(0, args.calls, 32):
                batch = range(start, min(args.calls, start + 32))
                await asyncio.gather(
                    *(call(http, url, sids[i % len(sids)], first_id + i, name, args.events) for i in batch)
                )

        mark = await usage(redis)
        await calls("json", 1000)
        steps["JSON call"] = (mark, await usage(redis), args.calls)
        mark = await usage(redis)
        await calls("sse", 1000 + args.calls)
        within: dict[str, int] = {}
        steps["streamed call, within the retention"] = (mark, await usage(redis, within), args.calls)
        out["one stream key"] = await one_stream(redis)
        await asyncio.sleep(args.retention + 1.5)  # Redis expires the ended streams' keys
        after: dict[str, int] = {}
        steps["streamed call, after the retention"] = (mark, await usage(redis, after), args.calls)
        out["bytes by key kind, within the retention"] = within
        out["bytes by key kind, after the retention"] = after
        for name, ((_, keys0, used0), (_, keys1, used1), n) in steps.items():
            out[name] = {"keys_bytes": round((keys1 - keys0) / n), "used_memory_bytes": round((used1 - used0) / n)}
        for sid in sids:
            response = await http.delete(url, headers={**HEADERS, "Mcp-Session-Id": sid})
            assert response.status_code == 200, response.text
        left = [k async for k in redis.scan_iter(match=f"{PREFIX}:{{*}}:*", count=1000)]
        out["session keys left after DELETE"] = len(left)
    await redis.aclose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--events", type=int, default=5, help="events per streamed answer (the last is the result)")
    parser.add_argument("--retention", type=float, default=40.0, help="--stream-retention of the replica, s")
    parser.add_argument(
        "--redis-arg",
        action="append",
        default=[],
        help="extra redis-server argument, e.g. `--redis-arg=--stream-node-max-bytes=1024`",
    )
    args = parser.parse_args(argv)
    group = ProcessGroup(log_dir=RESULTS / "logs" / "redis_memory")
    try:
        redis_port, upstream_port, port = free_port(), free_port(), free_port()
        redis = group.start(
            f"redis-{redis_port}",
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + [part for arg in args.redis_arg for part in arg.split("=", 1)],
        )
        redis.wait_port(redis_port)
        upstream = group.start(
            f"fast-upstream-{upstream_port}", [PY, "-m", "bench.fast_upstream", "--port", str(upstream_port)]
        )
        upstream.wait_http(f"http://127.0.0.1:{upstream_port}/healthz", timeout=30)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        argv = [PY, "-m", "gateway", "--port", str(port), "--redis-url", redis_url, "--key-prefix", PREFIX]
        argv += ["--upstream", f"default=http://127.0.0.1:{upstream_port}/mcp", "--log-level", "warning"]
        argv += ["--stream-retention", str(args.retention), *NO_CLIENT_LIMITS]
        gateway = group.start(f"gateway-{port}", argv, env=NO_METRICS_LISTENER)
        gateway.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=30)
        result = asyncio.run(measure(f"http://127.0.0.1:{port}/mcp", redis_url, args))
    finally:
        group.stop_all()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
