"""A Python SDK (mcp 2.3.0) upstream with SEP-2549 cache hints and `subscriptions/listen`, for the
response-cache tests: the SDK's own ttlMs/cacheScope filling and listen streams, not a mock.

    python tests/servers/sdk_cache_server.py --port P

`tools/list` and `resources/read` carry `ttlMs: 60000`, `cacheScope: "public"`. The tool `grow`
adds a tool named after its argument and announces `notifications/tools/list_changed` on every
listen stream (`ctx.notify_tools_changed()`). `GET /listeners`: open listen streams; `GET /healthz`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus, ServerEvent
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response


class CountingBus(InMemorySubscriptionBus):
    """The SDK's in-memory bus, counting its open listen streams (so tests know who listens)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        self.open += 1
        unsubscribe = super().subscribe(listener)

        def done() -> None:
            self.open -= 1
            unsubscribe()

        return done


def build_server() -> tuple[MCPServer, CountingBus]:
    bus = CountingBus()
    hint = CacheHint(ttl_ms=60_000, scope="public")
    server = MCPServer(name="sdk-cache", subscriptions=bus, cache_hints={"tools/list": hint, "resources/read": hint})

    @server.tool()
    async def grow(ctx: Context, name: str) -> str:
        """Add a tool called `name`, then tell listeners the tool list changed."""

        def added() -> str:
            return name

        server.add_tool(added, name=name, description=f"added by grow({name})")
        await ctx.notify_tools_changed()
        return f"grew {name}"

    @server.resource("note://one")
    def note() -> str:
        return "one"

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @server.custom_route("/listeners", methods=["GET"])  # type: ignore[untyped-decorator]
    async def listeners(request: Request) -> Response:
        return JSONResponse({"listeners": bus.open})

    return server, bus


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    server, _ = build_server()
    app = server.streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False), host="127.0.0.1"
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
