"""A minimal, fast MCP Streamable HTTP upstream for benchmarks: raw ASGI, no framework.

    python -m bench.fast_upstream --port P [--host 127.0.0.1] [--keepalive 15]

Served by uvicorn (httptools + uvloop, `--workers` processes, default one). It answers only what the benchmark sends:

* POST `initialize` -> JSON result with a fresh `Mcp-Session-Id`
* POST `notifications/*` (and JSON-RPC responses) -> 202
* POST `tools/call` name `json` -> JSON result
* POST `tools/call` name `sse` -> SSE: `arguments.events` (default 5) events, each with an `id:`;
  events 1..N-1 are `notifications/progress` (params carry `ts`, the upstream's CLOCK_MONOTONIC
  in ns when the event was written, so a client on the same machine measures one-way latency),
  event N is the result. `arguments.interval_ms` spaces them (default 0: as fast as possible).
* GET without `Last-Event-ID` -> standalone SSE stream that only sends keep-alive comments
* GET with `Last-Event-ID: <stream>-<i>` -> replay of events i+1..N of that stream, then end
  (events are deterministic, so nothing but (request id, N) is remembered per stream)
* DELETE -> 200 (the session is forgotten)
* GET /healthz -> 200

Unknown session ids are accepted (the benchmark is not a conformance test); a request without a
session id other than `initialize` gets 400.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import time
from collections import OrderedDict
from typing import Any

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
KEEPALIVE = b": keep-alive\n\n"

_streams: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # stream key -> (request id, events)
MAX_STREAMS = 20_000
_keepalive_interval = float(os.environ.get("FAST_UPSTREAM_KEEPALIVE", "15"))


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _respond(send: Any, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
    hdrs = list(headers or [])
    hdrs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def _error(code: int, message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _event(stream: str, i: int, n: int, request_id: Any) -> bytes:
    if i < n:
        message: dict[str, Any] = {
            "jsonrpc": "2.0",
            "method": "notifications/progress",
            "params": {"progressToken": request_id, "progress": i, "total": n, "ts": time.monotonic_ns()},
        }
    else:
        message = {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": {"content": [{"type": "text", "text": f"{n} events"}], "ts": time.monotonic_ns()},
        }
    return b"id: %s-%d\ndata: %s\n\n" % (stream.encode(), i, json.dumps(message, separators=(",", ":")).encode())


async def _sse_events(send: Any, stream: str, first: int, n: int, request_id: Any, interval: float) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for i in range(first, n + 1):
        if interval and i > first:
            await asyncio.sleep(interval)
        await send({"type": "http.response.body", "body": _event(stream, i, n, request_id), "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def _standalone(send: Any, receive: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        while True:
            done, _ = await asyncio.wait({watcher}, timeout=_keepalive_interval)
            if done:
                return
            await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
    except OSError:
        return
    finally:
        watcher.cancel()


async def _post(scope: dict[str, Any], receive: Any, send: Any) -> None:
    try:
        message = json.loads(await _read_body(receive))
    except ValueError:
        await _respond(send, 400, _error(-32700, "Parse error"), JSON_HEADERS)
        return
    if not isinstance(message, dict):
        await _respond(send, 400, _error(-32600, "batches are not supported here"), JSON_HEADERS)
        return
    method = message.get("method")
    request_id = message.get("id")
    if method == "initialize":
        params = message.get("params") or {}
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench-fast-upstream", "version": "1.0"},
        }
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()
        await _respond(send, 200, body, [*JSON_HEADERS, (b"mcp-session-id", secrets.token_hex(16).encode())])
        return
    if _header(scope, b"mcp-session-id") is None:
        await _respond(send, 400, _error(-32000, "Mcp-Session-Id required"), JSON_HEADERS)
        return
    if method is None or request_id is None:  # notification or response
        await _respond(send, 202)
        return
    if method == "tools/call":
        params = message.get("params") or {}
        name = params.get("name")
        args = params.get("arguments") or {}
        if name == "sse":
            n = max(1, int(args.get("events", 5)))
            stream = secrets.token_hex(6)
            _streams[stream] = (request_id, n)
            if len(_streams) > MAX_STREAMS:
                _streams.popitem(last=False)
            await _sse_events(send, stream, 1, n, request_id, float(args.get("interval_ms", 0)) / 1000)
            return
        if name == "json":
            result = {"content": [{"type": "text", "text": str(args.get("text", "ok"))}], "isError": False}
            answer = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}, separators=(",", ":"))
            await _respond(send, 200, answer.encode(), JSON_HEADERS)
            return
        error = {"code": -32602, "message": f"unknown tool {name!r}"}
    elif method == "tools/list":
        tools = [{"name": n, "inputSchema": {"type": "object"}} for n in ("json", "sse")]
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools}}).encode()
        await _respond(send, 200, body, JSON_HEADERS)
        return
    else:
        error = {"code": -32601, "message": f"method not found: {method}"}
    await _respond(send, 200, json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode(), JSON_HEADERS)


async def _get(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if _header(scope, b"mcp-session-id") is None:
        await _respond(send, 400, b"session id required")
        return
    last = _header(scope, b"last-event-id")
    if last is None:
        await _standalone(send, receive)
        return
    stream, _, index = last.decode().rpartition("-")
    known = _streams.get(stream)
    if known is None or not index.isdigit():
        await _respond(send, 404, b"unknown stream")
        return
    request_id, n = known
    await _sse_events(send, stream, int(index) + 1, n, request_id, 0.0)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    method = scope["method"]
    if path == "/healthz":
        await _respond(send, 200, b"ok")
        return
    if path != "/mcp":
        await _respond(send, 404, b"not found")
        return
    if method == "POST":
        await _post(scope, receive, send)
    elif method == "GET":
        await _get(scope, receive, send)
    elif method == "DELETE":
        await _respond(send, 200)
    else:
        await _respond(send, 405, b"", [(b"allow", b"GET, POST, DELETE")])


def main() -> None:
    global _keepalive_interval
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive", type=float, default=15.0, help="standalone stream keep-alive, s")
    parser.add_argument("--workers", type=int, default=1, help="processes (one holds at most RLIMIT_NOFILE streams)")
    args = parser.parse_args()
    _keepalive_interval = args.keepalive
    os.environ["FAST_UPSTREAM_KEEPALIVE"] = str(args.keepalive)  # for spawned workers
    import uvicorn

    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            app if args.workers == 1 else "bench.fast_upstream:app",
            host=args.host,
            port=args.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_level="warning",
            access_log=False,
            workers=args.workers,
            backlog=8192,
            timeout_keep_alive=60,
        )


if __name__ == "__main__":
    main()
