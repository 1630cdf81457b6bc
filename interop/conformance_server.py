"""Fixture server for `@modelcontextprotocol/conformance` server scenarios, on the Python SDK (mcp 2.3.0).

    .venv/bin/python interop/conformance_server.py --port P [--host 127.0.0.1]

Serves Streamable HTTP at `/mcp` (both eras: the dated 2025 revisions with sessions, and the
stateless 2026-07-28 revision, which the SDK dispatches by `MCP-Protocol-Version`) and `GET /healthz`.

Names, arguments and answers follow the "Server Implementation Requirements" that each server
scenario of the suite carries in its description (`conformance list --server`; the text lives in
`interop/node_modules/@modelcontextprotocol/conformance/dist/index.js`). DNS-rebinding protection
stays ON for localhost Host/Origin values on any port (the `dns-rebinding-protection` scenario
checks it); `--allow-host` adds Host values a proxy may forward. The SSE event store makes
`test_reconnection` (`server-sse-polling`) resumable.

The tools, resources and prompts live in the sibling `interop/conformance_*.py` modules; this one
builds the server from them (in the same order) and runs it.
"""

# No `from __future__ import annotations`: the SDK evaluates tool annotations that name local resolvers.
import argparse
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import uvicorn
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CreateMessageResult, EmptyResult, SetLevelRequestParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "servers"))
# Run as a script (`python interop/conformance_server.py`), the repository root is not on the path: the
# sibling modules below are imported through the `interop` package.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from event_store import InMemoryEventStore  # type: ignore[import-not-found]

from interop.conformance_client_requests import register_client_request_tools
from interop.conformance_common import sampling_question
from interop.conformance_input_required import register_input_required_tools
from interop.conformance_prompts import register_prompts
from interop.conformance_resources import register_resources
from interop.conformance_task_tools import register_task_tools
from interop.conformance_tools import register_content_tools, register_notification_tools


def build_server() -> MCPServer:
    server: MCPServer = MCPServer(
        name="mcp-conformance-test-server",
        version="1.0.0",
        log_level="WARNING",
        cache_hints={
            m: CacheHint(ttl_ms=0, scope="private")
            for m in ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read")
        },
    )
    register_content_tools(server)
    register_notification_tools(server)
    register_client_request_tools(server)

    # ------------------------------------------------------------------ 2026-07-28: InputRequiredResult (SEP-2322)
    # Kept here: the SDK keys a resolver's wire state by `module:qualname`, and this one's stays
    # `__main__:build_server.<locals>.ask_sampling` as before the split.
    async def ask_sampling(ctx: Context) -> Sample:
        return sampling_question("capability probe")

    @server.tool(description="Needs the client's sampling capability (-32021 when undeclared)")
    async def test_missing_capability(answer: Annotated[CreateMessageResult, Resolve(ask_sampling)]) -> str:
        return "sampled"

    register_input_required_tools(server)
    register_resources(server)

    async def on_set_level(ctx: Any, params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()  # dated eras: accepted; the SDK filters per-request log levels itself

    server._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, on_set_level)

    register_prompts(server)
    register_task_tools(server)

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return server


def trim_ows(app: Any) -> Any:
    """RFC 9110 §5.5: whitespace around a field value is not part of it. mcp 2.3.0 compares
    `Mcp-Name`/`Mcp-Method` untrimmed (the conformance check `sep-2243-server-accepts-whitespace-
    header-value` fails against the bare SDK); the fixture trims before the SDK sees the request."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [(k, v.strip(b" \t")) for k, v in scope["headers"]]}
        await app(scope, receive, send)

    return wrapped


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--allow-host", action="append", default=[], help="extra allowed Host header value")
    args = p.parse_args(argv)
    server = build_server()
    local = [f"{h}:*" for h in ("127.0.0.1", "localhost", "[::1]")]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*local, *args.allow_host],
        allowed_origins=[f"http://{h}" for h in local],
    )
    app = server.streamable_http_app(
        event_store=InMemoryEventStore(), retry_interval=100, transport_security=security, host=args.host
    )
    uvicorn.run(trim_ows(app), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
