"""The floor of a JSON call in Python: the gateway's wire work with nothing else around it.

    .venv/bin/python -m bench.floor [--rounds 4] [--duration 4] [--conns 64] [--baseline REV]

How much of a JSON `tools/call`'s CPU is the gateway's own (its request object, rules, claim,
outcome, headers, metrics, uvicorn's cycle and the ASGI task), and how much is the IO any Python
proxy of this design pays? `serve` is a bare asyncio server (uvloop's loop, httptools' parser, no
ASGI, no framework, no validation) that does per POST exactly what the gateway puts on the wire
for a sessionful JSON call: the claim script's round trip on the gateway's own Redis lane (the
gateway's script, keys and claim JSON, so Redis does the same work), the upstream request on the
gateway's own HTTP/1.1 pool, the answer in one write, then the answer's record cast on the lane.
Its `/http` path answers at once (the HTTP server alone). One replica of this checkout and the
floor server run side by side on the same Redis, upstream and sessions, loaded in alternating
rounds by `wrk` (64 connections), with `--baseline REV` a replica of that revision too; CPU per
call is each process's CPU time over the calls it served, the median of the rounds.

`--latency`: also the p50 of one connection's back-to-back calls (aiohttp, as scenario 7) on each
target and on the upstream directly, in alternating rounds: how much of the latency a call adds
at one connection the hops alone cost (the floor's added p50) and how much is the gateway's own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httptools
import msgspec

from bench import loadgen as lg
from bench.suite import checkout
from bench.topology import PY, REPO, Topology
from gateway.store import claims as claim_scripts
from gateway.store.client import Script, connect
from gateway.store.keys import Keys
from gateway.store.sessions import RECORD_FIELDS
from gateway.upstream.http1 import Http1Pool
from tests.integration.procs import free_port

_CANNED = b'{"jsonrpc":"2.0","id":1,"result":{}}'
_UPSTREAM_SID = RECORD_FIELDS.index(b"upstream_sid")


class _Floor(asyncio.Protocol):
    """One client connection: parse, run the call as a task, write its answer."""

    def __init__(self, app: _App) -> None:
        self._app = app
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._sid = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._url, self._sid, self._body = b"", b"", []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"mcp-session-id":
            self._sid = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        assert self._transport is not None
        if self._url == b"/http":
            self._transport.write(_answer(_CANNED, b""))
            return
        self._app.spawn(self._app.call(self._transport, self._sid.decode(), b"".join(self._body)))


def _answer(body: bytes, sid: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return head + (b"mcp-session-id: " + sid + b"\r\n" if sid else b"") + b"\r\n" + body


class _App:
    def __init__(self, redis_url: str, prefix: str, upstream: str) -> None:
        self._redis = connect(redis_url, max_connections=8)
        self._keys = Keys(prefix)
        self._claim = Script(self._redis, claim_scripts._LOAD_AND_CLAIM)
        self._update = Script(self._redis, claim_scripts._UPDATE)
        self._pool = Http1Pool(connect_timeout=5.0, limit_per_host=256)
        self._upstream = upstream
        self._tasks: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": lg.VERSION,
            "Accept-Encoding": "identity",
        }

    def spawn(self, call: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(call)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)  # as uvicorn holds its request tasks

    async def aclose(self) -> None:
        await self._pool.close()
        await self._redis.aclose()

    async def call(self, transport: asyncio.Transport, sid: str, body: bytes) -> None:
        request_id = msgspec.json.decode(body)["id"]
        field = claim_scripts.claim_field(request_id)
        keys = self._keys
        claim = claim_scripts.Claim(body_hash="0" * 32, stream="s" * 16, replica="floor", at=time.time())
        session = [keys.session(sid), keys.streams(sid), keys.requests(sid)]
        # "0": no TTL renewal due, as on all but one of a session's calls per tenth of its TTL
        reply = await self._claim(keys=session, args=["3600000", "", "", claim.to_json(), "1000", "0", field])
        upstream_sid = (reply[_UPSTREAM_SID] or b"").decode()  # the script's reply: RECORD_FIELDS' values
        headers = {**self._headers, "Mcp-Session-Id": upstream_sid}
        response = await self._pool.request("POST", self._upstream, headers, body)
        chunks = []
        while (chunk := await response.next_chunk()) is not None:
            chunks.append(chunk)
        answer = b"".join(chunks)
        transport.write(_answer(answer, sid.encode()))
        self._update.cast(keys=[keys.requests(sid)], args=[claim.answered(200, answer.decode()).to_json(), field])


async def _serve(port: int, redis_url: str, prefix: str, upstream: str) -> None:
    app = _App(redis_url, prefix, upstream)
    server = await asyncio.get_running_loop().create_server(lambda: _Floor(app), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    targets: dict[str, tuple[str, int]], sids: list[str], rounds: int, duration: int, conns: int
) -> dict[str, list[float]]:
    per_call: dict[str, list[float]] = {name: [] for name in targets}
    workdir = Path(tempfile.mkdtemp(prefix="mcpgw-floor-"))
    body = lg.tool_call("json", {"text": "hi"})
    for _ in range(rounds):
        for name, (url, pid) in targets.items():
            before = _cpu(pid)
            result = await lg.run_wrk(url, sids, body, conns=conns, duration=duration, workdir=workdir)
            if result["errors"]:
                raise RuntimeError(f"{name}: {result['errors']} errors under load: {result['error_detail']}")
            per_call[name].append(1e6 * (_cpu(pid) - before) / result["ops"])
    return per_call


async def _latency(targets: dict[str, str], sids: list[str], rounds: int, duration: float) -> dict[str, list[float]]:
    """Median latency (ms) of one connection's back-to-back JSON calls, per target and round."""
    body = lg.tool_call("json", {"text": "hi"})
    p50: dict[str, list[float]] = {name: [] for name in targets}
    async with lg.new_session(1) as http:
        session = {name: sids[0] for name in targets}
        session["direct"] = await lg.initialize(http, targets["direct"])
        for _ in range(rounds):
            for name, url in targets.items():
                sid = session[name]
                result = await lg.closed_loop(
                    1,
                    duration,
                    lambda _i, url=url, sid=sid: lg.call_json(http, url, sid, body),  # type: ignore[misc]
                )
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} errors at one connection: {result.first_error}")
                p50[name].append(1e3 * statistics.median(result.latencies))
    return p50


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--baseline", help="git revision of the gateway to load beside this checkout")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--latency", action="store_true", help="also the p50 at one connection, direct included")
    args = parser.parse_args(argv)
    prefix = f"bench-floor-{os.getpid()}"
    top = Topology(args.redis_url, prefix, replicas=0, with_nginx=False, with_sdk=False)
    top.start()
    try:
        gw = top.start_gateway()
        base = top.start_gateway(cwd=checkout(args.baseline)) if args.baseline else None
        port = free_port()
        upstream = f"http://127.0.0.1:{top.fast_port}/mcp"
        floor = top.group.start(
            f"floor-{port}", [PY, "-m", "bench.floor", "serve", str(port), args.redis_url, prefix, upstream], cwd=REPO
        )
        floor.wait_port(port, timeout=30)

        async def run() -> dict[str, list[float]]:
            gw_url = f"{gw.base}/mcp"
            async with lg.sessions_at(gw_url, args.conns) as sids:
                targets = {"gateway": (gw_url, gw.proc.pid)}
                if base is not None:
                    targets[f"gateway at {args.baseline}"] = (f"{base.base}/mcp", base.proc.pid)
                targets |= {
                    "floor, same wire work": (f"http://127.0.0.1:{port}/mcp", floor.pid),
                    "floor, HTTP answer only": (f"http://127.0.0.1:{port}/http", floor.pid),
                }
                per_call = await _measure(targets, sids, args.rounds, args.duration, args.conns)
                if args.latency:
                    served = {name: url for name, (url, _) in targets.items() if "HTTP" not in name}
                    urls = {"direct": upstream} | served
                    latency.update(await _latency(urls, sids, args.rounds, min(args.duration, 2)))
                return per_call

        latency: dict[str, list[float]] = {}
        per_call = asyncio.run(run())
    finally:
        top.stop()
    gateway = statistics.median(per_call["gateway"])
    for name, values in per_call.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        median = statistics.median(values)
        print(f"{name}: {median:.0f} us CPU per JSON call ({median / gateway:.2f} of the gateway's; rounds {runs})")
    if latency:
        direct = statistics.median(latency["direct"])
        print(f"one connection, p50 of back-to-back calls: direct {direct:.3f} ms")
        for name, values in latency.items():
            if name != "direct":
                median = statistics.median(values)
                print(f"  {name}: {median:.3f} ms, adds {median - direct:.3f} ms")


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        import uvloop

        port, redis_url, prefix, upstream = sys.argv[2:6]
        uvloop.run(_serve(int(port), redis_url, prefix, upstream))
    else:
        main()
