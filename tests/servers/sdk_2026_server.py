"""A 2026-07-28-only upstream on the official Python SDK (mcp 2.3.0), for the era-bridging tests.

    python tests/servers/sdk_2026_server.py --port P [--host 127.0.0.1] [--name NAME]

The SDK serves both eras on one endpoint; a thin ASGI wrapper in front of it refuses everything a
server that speaks only 2026-07-28 refuses: a POST without `MCP-Protocol-Version: 2026-07-28`
(which includes every `initialize`), a GET (no standalone stream) and a DELETE (no sessions), the
way the SDK's own modern entry refuses a version it does not support (400, -32602
UnsupportedProtocolVersion). Tools: `echo`, `add`, `whoami`, `slow_count` (progress), `ask`
(elicits a name through `Resolve(...)`/`Elicit(...)`: an input-required result at 2026-07-28),
`muse` (samples the client's model), `rooted` (lists the client's roots),
`shout` (logs its text), `regional` (its `region` parameter carries `x-mcp-header: Region`), `touch` (publishes a
`resources/updated` of its `uri` and a tool-list change to the `subscriptions/listen` streams).
`GET /healthz`, `GET /seen` (the `Mcp-*` headers of every tools/call it served), `GET /stats`
(slow_count started/finished/cancelled).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Annotated

import uvicorn
from mcp.server.mcpserver import Context, Elicit, ListRoots, MCPServer, Resolve, Sample
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from mcp_types import CreateMessageResult, ListRootsResult, SamplingMessage, TextContent
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

MODERN = "2026-07-28"


class Name(BaseModel):
    name: str


def ask_name() -> Elicit[Name]:
    return Elicit("What is your name?", Name)


def ask_model(topic: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=topic))], max_tokens=20)


def ask_roots() -> ListRoots:
    return ListRoots()


def build_server(name: str, seen: list[dict[str, str]], stats: dict[str, int]) -> MCPServer:
    bus = InMemorySubscriptionBus()
    server: MCPServer = MCPServer(name=name, subscriptions=bus)

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
    async def slow_count(ctx: Context, steps: int = 5, delay: float = 0.2) -> str:
        """One progress notification per step, `delay` seconds apart."""
        stats["started"] += 1
        try:
            for i in range(1, steps + 1):
                await ctx.report_progress(i, steps, f"step {i}/{steps}")
                if i < steps:
                    await asyncio.sleep(delay)
        except BaseException:  # cancelled: the request's connection closed (2026-07-28)
            stats["cancelled"] += 1
            raise
        stats["finished"] += 1
        return f"counted {steps}"

    @server.tool()
    async def shout(ctx: Context, text: str) -> str:
        """Send `text` as an info log notification (sent only when the request's _meta has a level)."""
        await ctx.info(text)
        return "shouted"

    @server.tool()
    async def touch(uri: str) -> str:
        """Announce a change of `uri` and of the tool list (on every subscriptions/listen stream)."""
        await bus.publish(ResourceUpdated(uri=uri))
        await bus.publish(ToolsListChanged())
        return f"touched {uri}"

    @server.tool()
    def ask(who: Annotated[Name, Resolve(ask_name)]) -> str:
        """Greet the user, whose name is asked (elicitation)."""
        return f"hello {who.name} from {name}"

    @server.tool()
    def muse(topic: str, said: Annotated[CreateMessageResult, Resolve(ask_model)]) -> str:
        """What the client's model said about `topic` (sampling/createMessage)."""
        text = said.content.text if isinstance(said.content, TextContent) else "?"
        return f"the model said {text}"

    @server.tool()
    def rooted(roots: Annotated[ListRootsResult, Resolve(ask_roots)]) -> str:
        """The client's root URIs (roots/list)."""
        return " ".join(str(root.uri) for root in roots.roots)

    @server.tool()
    def regional(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], query: str) -> str:
        """Answer `query` in `region` (the region rides the Mcp-Param-Region header)."""
        return f"{query} in {region}"

    return server


def modern_only(app: ASGIApp, seen: list[dict[str, str]]) -> ASGIApp:
    """Pure ASGI: refuse what a 2026-07-28-only server refuses; note each tools/call's Mcp-* headers."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/mcp":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] != "POST":
            await Response(status_code=405, headers={"Allow": "POST"})(scope, receive, send)
            return
        if headers.get("mcp-protocol-version") != MODERN:
            error = {"code": -32602, "message": "Unsupported protocol version", "data": {"supported": [MODERN]}}
            body = {"jsonrpc": "2.0", "id": None, "error": error}
            await JSONResponse(body, status_code=400)(scope, receive, send)
            return
        if headers.get("mcp-method") == "tools/call":
            seen.append({k: v for k, v in headers.items() if k.startswith("mcp-")})
        await app(scope, receive, send)

    return wrapped


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--name", default="sdk-2026")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    seen: list[dict[str, str]] = []
    stats = {"started": 0, "finished": 0, "cancelled": 0}
    server = build_server(args.name, seen, stats)

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @server.custom_route("/seen", methods=["GET"])  # type: ignore[untyped-decorator]
    async def seen_route(request: Request) -> Response:
        return JSONResponse(seen)

    @server.custom_route("/stats", methods=["GET"])  # type: ignore[untyped-decorator]
    async def stats_route(request: Request) -> Response:
        return JSONResponse(stats)

    app = server.streamable_http_app(
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False), host=args.host
    )
    config = uvicorn.Config(
        modern_only(app, seen), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
