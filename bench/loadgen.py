"""Load generators: an async MCP client on aiohttp (closed loop, many connections) and `wrk`.

Every latency is wall-clock time measured by the client, in seconds internally and reported in
ms. SSE events from the fast upstream carry the upstream's CLOCK_MONOTONIC write time (`ts`,
ns), which is the same clock as `time.monotonic_ns()` here (one machine), so the client also
measures each event's one-way latency (upstream write -> client read).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import resource
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

VERSION = "2025-11-25"
ACCEPT_BOTH = "application/json, text/event-stream"
_ids = itertools.count(1)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def new_session(conns: int, timeout: float = 30.0) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max(conns, 1), limit_per_host=0, ttl_dns_cache=None, use_dns_cache=True)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )


def headers(sid: str | None = None, *, accept: str = ACCEPT_BOTH, post: bool = True) -> dict[str, str]:
    h = {"Accept": accept, "MCP-Protocol-Version": VERSION}
    if post:
        h["Content-Type"] = "application/json"
    if sid:
        h["Mcp-Session-Id"] = sid
    return h


def rpc(method: str, params: dict[str, Any] | None = None, *, notify: bool = False) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if not notify:
        msg["id"] = next(_ids)
    if params is not None:
        msg["params"] = params
    return json.dumps(msg, separators=(",", ":")).encode()


INIT_PARAMS = {
    "protocolVersion": VERSION,
    "capabilities": {},
    "clientInfo": {"name": "mcp-gateway-bench", "version": "1.0"},
}


class BenchError(RuntimeError):
    pass


async def initialize(http: aiohttp.ClientSession, url: str, *, notify: bool = True) -> str:
    """initialize (+ notifications/initialized); returns the session id."""
    async with http.post(url, data=rpc("initialize", INIT_PARAMS), headers=headers()) as resp:
        body = await resp.read()
        sid = resp.headers.get("Mcp-Session-Id")
        if resp.status != 200 or not sid or b'"result"' not in body:
            raise BenchError(f"initialize at {url}: HTTP {resp.status} {body[:200]!r}")
    if notify:
        async with http.post(url, data=rpc("notifications/initialized", notify=True), headers=headers(sid)) as resp:
            await resp.read()
            if resp.status != 202:
                raise BenchError(f"notifications/initialized at {url}: HTTP {resp.status}")
    return sid


async def delete(http: aiohttp.ClientSession, url: str, sid: str) -> None:
    async with http.delete(url, headers=headers(sid, post=False)) as resp:
        await resp.read()
        if resp.status not in (200, 204):
            raise BenchError(f"DELETE at {url}: HTTP {resp.status}")


def tool_call(name: str, arguments: dict[str, Any]) -> bytes:
    return rpc("tools/call", {"name": name, "arguments": arguments})


_ID = re.compile(rb'"id":\d+')


def fresh_id(body: bytes) -> bytes:
    """`body` (built by `rpc`) with a new request id: MCP basic §Requests forbids reusing an id in a
    session, and the gateway answers a reused one from the first copy's claim (a replay, which never
    reaches the upstream) — a load that repeats one body would measure that path, not the proxy's."""
    return _ID.sub(b'"id":%d' % next(_ids), body, count=1)


async def call_json(http: aiohttp.ClientSession, url: str, sid: str, body: bytes | None = None) -> None:
    data = fresh_id(body) if body is not None else tool_call("json", {"text": "hi"})
    async with http.post(url, data=data, headers=headers(sid)) as resp:
        data = await resp.read()
        if resp.status != 200 or b'"result"' not in data:
            raise BenchError(f"tools/call at {url}: HTTP {resp.status} {data[:200]!r}")


@dataclass
class SseRead:
    events: list[tuple[str | None, str]] = field(default_factory=list)  # (id, data) of data events
    one_way_ns: list[int] = field(default_factory=list)  # upstream write -> client read, per event
    first_at: float = 0.0  # perf_counter of the first data event
    last_at: float = 0.0


async def read_sse(
    resp: aiohttp.ClientResponse, *, stop_after: int = 0, timing: bool = True, until_id_suffix: str | None = None
) -> SseRead:
    """Read an SSE body; with `stop_after` > 0 return after that many data events (connection left open)."""
    out = SseRead()
    buf = b""
    async for chunk in resp.content.iter_any():
        now_ns = time.monotonic_ns()
        now = time.perf_counter()
        buf += chunk
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            eid = None
            data_lines = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data_lines.append(line[5:].lstrip(b" "))
                elif line.startswith(b"id:"):
                    eid = line[3:].strip().decode()
            data = b"\n".join(data_lines)
            if not data:
                continue  # priming event, keep-alive comment, retry hint
            if not out.events:
                out.first_at = now
            out.last_at = now
            out.events.append((eid, data.decode()))
            if timing:
                msg = json.loads(data)
                ts = (msg.get("params") or msg.get("result") or {}).get("ts")
                if ts:
                    out.one_way_ns.append(now_ns - int(ts))
            if stop_after and len(out.events) >= stop_after:
                return out
            if until_id_suffix and eid and eid.endswith(until_id_suffix):
                return out
    return out


async def call_sse(http: aiohttp.ClientSession, url: str, sid: str, events: int) -> SseRead:
    async with http.post(url, data=tool_call("sse", {"events": events}), headers=headers(sid)) as resp:
        if resp.status != 200 or resp.content_type != "text/event-stream":
            raise BenchError(f"sse tools/call at {url}: HTTP {resp.status} {resp.content_type}")
        got = await read_sse(resp)
    if len(got.events) != events or '"result"' not in got.events[-1][1]:
        raise BenchError(f"sse tools/call at {url}: {len(got.events)} events of {events}")
    return got


# ---------------------------------------------------------------- closed loop


@dataclass
class LoopResult:
    conns: int
    duration: float
    ops: int = 0
    completed: int = 0  # every op that succeeded, also those ending after the window (for per-op costs)
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)  # seconds, ops completed in the window
    extra: list[float] = field(default_factory=list)  # e.g. per-event one-way latencies, seconds

    def summary(self) -> dict[str, Any]:
        lat = self.latencies
        out: dict[str, Any] = {
            "conns": self.conns,
            "duration_s": round(self.duration, 2),
            "ops": self.ops,
            "ops_per_s": round(self.ops / self.duration, 1) if self.duration else 0.0,
            "p50_ms": ms(pct(lat, 50)),
            "p90_ms": ms(pct(lat, 90)),
            "p99_ms": ms(pct(lat, 99)),
            "max_ms": ms(max(lat)) if lat else 0.0,
            "errors": self.errors,
        }
        if self.first_error:
            out["first_error"] = self.first_error[:300]
        return out


Op = Callable[[int], Awaitable[list[float] | None]]


async def closed_loop(conns: int, duration: float, op: Op, *, warmup: float = 0.3) -> LoopResult:
    """`conns` workers call `op(worker)` back to back; ops completing inside the window count."""
    result = LoopResult(conns=conns, duration=duration)
    t0 = time.perf_counter()
    t_measure = t0 + warmup
    t_end = t_measure + duration

    async def worker(i: int) -> None:
        while True:
            start = time.perf_counter()
            if start >= t_end:
                return
            try:
                extra = await op(i)
            except Exception as exc:  # counted, reported; the loop goes on
                result.errors += 1
                if not result.first_error:
                    result.first_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.01)
                continue
            end = time.perf_counter()
            result.completed += 1
            if t_measure <= end <= t_end:
                result.ops += 1
                result.latencies.append(end - start)
                if extra:
                    result.extra.extend(extra)

    await asyncio.gather(*(worker(i) for i in range(conns)))
    return result


# ---------------------------------------------------------------- wrk

WRK_LUA = r"""
local sids = {}
local i = 0
local n = 0
local body, version, base
function init(args)
  body = args[1]
  version = args[3]
  base = args[4]
  for sid in string.gmatch(args[2], "[^,]+") do
    sids[#sids + 1] = sid
  end
end
-- A fresh request id per request (a reused id in a session is a replay the gateway answers
-- from the first copy's claim, without reaching the upstream).
function request()
  i = i % #sids + 1
  n = n + 1
  local b = string.gsub(body, '"id":%d+', '"id":"' .. base .. '-' .. n .. '"', 1)
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = version,
    ["Mcp-Session-Id"] = sids[i],
  }, b)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def wrk_binary() -> str | None:
    return shutil.which("wrk")


async def run_wrk(
    url: str, sids: list[str], body: bytes, *, conns: int, duration: int, workdir: Path, threads: int = 1
) -> dict[str, Any]:
    binary = wrk_binary()
    if binary is None:
        raise BenchError("wrk is not installed: run bench/setup")
    script = workdir / "mcp_call.lua"
    script.write_text(WRK_LUA)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        body.decode(),
        ",".join(sids),
        VERSION,
        f"wrk{time.time_ns()}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({proc.returncode}): {text[-1000:]}")
    raw = json.loads(line[len("WRKJSON ") :])
    secs = raw["duration_us"] / 1e6
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "conns": conns,
        "duration_s": round(secs, 2),
        "ops": raw["requests"],
        "ops_per_s": round(raw["requests"] / secs, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "max_ms": round(raw["max_us"] / 1000, 3),
        "errors": errors,
        "error_detail": {k: v for k, v in raw.items() if k.startswith("errors_") and v},
        "loadgen": "wrk",
        "loadgen_cpu_pct": round(100 * cpu / secs, 1),
    }


@contextlib.asynccontextmanager
async def sessions_at(url: str, n: int, *, conns: int = 16) -> Any:
    """Open `n` MCP sessions at `url` (initialize + initialized); DELETE them afterwards."""
    async with new_session(conns) as http:
        sem = asyncio.Semaphore(conns)

        async def one() -> str:
            async with sem:
                return await initialize(http, url)

        sids = list(await asyncio.gather(*(one() for _ in range(n))))
        try:
            yield sids
        finally:
            with contextlib.suppress(Exception):

                async def drop(sid: str) -> None:
                    async with sem:
                        with contextlib.suppress(Exception):
                            await delete(http, url, sid)

                await asyncio.gather(*(drop(s) for s in sids))
