"""Real upstream MCP server on the official Python SDK (mcp 2.3.0), for integration tests.

    python tests/servers/sdk_server.py --port P [--host 127.0.0.1] [--name NAME] [--event-store]
        [--json-response] [--stateless] [--retry-interval MS] [--log-level LEVEL]

Serves Streamable HTTP at `/mcp` and `GET /healthz` (200 "ok"); `GET /traceparents` lists the
W3C `traceparent` header of every request it received (the tracing tests check propagation). DNS-rebinding protection is
switched off: the SDK turns it on for host 127.0.0.1 and would answer 421 to a proxy that
forwards another Host header. `--log-level INFO` logs what a production SDK server logs (its
session manager's "Created new transport ..." lines and uvicorn's access log): the health-probe
tests count those lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from collections.abc import Sequence

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from event_store import (  # type: ignore[import-not-found]
    InMemoryEventStore,
    per_session_event_stores,
)


def build_server(name: str, log_level: str = "WARNING", traceparents: list[str] | None = None) -> MCPServer:
    server: MCPServer = MCPServer(name=name, log_level=log_level)  # type: ignore[arg-type]
    # slow_count bookkeeping, served at GET /stats so tests can see cancellations upstream
    stats = {"started": 0, "finished": 0, "cancelled": 0}
    traceparents = [] if traceparents is None else traceparents
    # slow_count runs per `tag`, served at GET /executions: tests assert a call ran exactly once
    executions: Counter[str] = Counter()

    @server.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Return a + b."""
        return a + b

    @server.tool()
    def whoami() -> str:
        """Return this instance's --name."""
        return name

    @server.tool()
    async def slow_count(
        ctx: Context, steps: int = 5, delay: float = 0.2, close_stream_at: int = 0, tag: str = ""
    ) -> str:
        """Send one progress notification per step, sleeping `delay` seconds between steps.

        Each run is counted under `tag` (GET /executions), so a test can tell a replay that ran
        the tool again from one answered by the gateway.

        With `close_stream_at=k` (and --event-store) the server closes this request's SSE stream
        right after progress k (SDK `ctx.close_sse_stream()`), so the client must resume.
        """
        stats["started"] += 1
        executions[tag] += 1
        try:
            for i in range(1, steps + 1):
                await ctx.report_progress(i, steps, f"step {i}/{steps}")
                if i == close_stream_at:
                    await ctx.close_sse_stream()
                if i < steps:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            stats["cancelled"] += 1
            raise
        stats["finished"] += 1
        return f"counted {steps}"

    @server.tool()
    async def broadcast(ctx: Context, count: int = 5, delay: float = 0.1) -> str:
        """Send `count` resources/updated notifications (uri `res://<i>`) on the session's
        standalone GET stream (not related to this request), `delay` seconds apart."""
        for i in range(count):
            await ctx.session.send_resource_updated(f"res://{i}")
            await asyncio.sleep(delay)
        return f"broadcast {count}"

    @server.tool()
    async def notify_later(ctx: Context, delay: float = 0.5, text: str = "later") -> str:
        """Sleep `delay` seconds, send a log notification carrying `text`, then answer."""
        await asyncio.sleep(delay)
        await ctx.info(text)
        return "notified"

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @server.custom_route("/stats", methods=["GET"])  # type: ignore[untyped-decorator]
    async def stats_route(request: Request) -> Response:
        return JSONResponse(stats)

    @server.custom_route("/traceparents", methods=["GET"])  # type: ignore[untyped-decorator]
    async def traceparents_route(request: Request) -> Response:
        return JSONResponse(traceparents)

    @server.custom_route("/executions", methods=["GET"])  # type: ignore[untyped-decorator]
    async def executions_route(request: Request) -> Response:
        return JSONResponse(dict(executions))

    return server


def recording_traceparents(app: ASGIApp, seen: list[str]) -> ASGIApp:
    """Pure ASGI: note each request's `traceparent` header in `seen`."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"traceparent":
                    seen.append(value.decode("latin-1"))
        await app(scope, receive, send)

    return wrapped


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="sdk-upstream")
    p.add_argument("--event-store", action="store_true")
    p.add_argument("--json-response", action="store_true")
    p.add_argument("--stateless", action="store_true")
    p.add_argument("--retry-interval", type=int, default=None, help="SSE retry hint in ms (needs --event-store)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    traceparents: list[str] = []
    server = build_server(args.name, args.log_level, traceparents)
    app = server.streamable_http_app(
        json_response=args.json_response,
        stateless_http=args.stateless,
        event_store=InMemoryEventStore() if args.event_store else None,
        retry_interval=args.retry_interval,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=args.host,
    )
    per_session_event_stores(server.session_manager)
    config = uvicorn.Config(
        recording_traceparents(app, traceparents),
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
