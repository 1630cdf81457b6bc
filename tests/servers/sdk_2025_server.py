"""The Python SDK test server (`sdk_server.py`) restricted to the 2025 eras, for the era bridge's tests.

    python tests/servers/sdk_2025_server.py --port P [--name NAME] [--event-store]

A thin ASGI wrapper refuses every 2026-07-28 request the way `@modelcontextprotocol/server-everything`
2026.8.31 does (`400 {"code":-32000,"message":"Bad Request: Server not initialized"}`), so the
gateway must detect a 2025-only instance and bridge to it. Adds `ask_name`, a tool that elicits
(2025: `elicitation/create` on the call's SSE stream). `GET /sessions` counts `initialize` requests
and DELETEs seen (tests assert the bridge opens no session per request and reaps idle ones).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from event_store import InMemoryEventStore, per_session_event_stores  # type: ignore[import-not-found]
from sdk_server import build_server, parse_args  # type: ignore[import-not-found]

REFUSAL = json.dumps(
    {"jsonrpc": "2.0", "error": {"code": -32000, "message": "Bad Request: Server not initialized"}, "id": None}
).encode()


class Name(BaseModel):
    name: str


def add_tools(server: MCPServer) -> None:
    @server.tool()
    async def ask_name(ctx: Context) -> str:
        """Elicit the user's name and greet them."""
        answer = await ctx.elicit("What is your name?", Name)
        if answer.action != "accept":
            return f"no name ({answer.action})"
        return f"hello {answer.data.name}"


def only_2025(app: ASGIApp, counts: Counter[str]) -> ASGIApp:
    """Pure ASGI: a 2026-07-28 request (by its MCP-Protocol-Version header) is refused."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/mcp":
            headers = dict(scope["headers"])
            version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
            if version >= "2026":
                response = Response(REFUSAL, status_code=400, media_type="application/json")
                await response(scope, receive, send)
                return
            if scope["method"] == "DELETE":
                counts["deleted"] += 1
            if scope["method"] == "POST" and b"mcp-session-id" not in headers:
                counts["initialized"] += 1  # a POST without a session: an initialize
        await app(scope, receive, send)

    return wrapped


def main() -> None:
    args = parse_args()
    server = build_server(args.name, args.log_level)
    add_tools(server)
    counts: Counter[str] = Counter()

    @server.custom_route("/sessions", methods=["GET"])  # type: ignore[untyped-decorator]
    async def sessions_route(request: Request) -> Response:
        return JSONResponse(dict(counts))

    app = server.streamable_http_app(
        event_store=InMemoryEventStore() if args.event_store else None,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=args.host,
    )
    per_session_event_stores(server.session_manager)
    config = uvicorn.Config(only_2025(app, counts), host=args.host, port=args.port, log_level=args.log_level.lower())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
