"""A second real upstream on the official Python SDK, with another tool set (virtual-server tests).

    python tests/servers/sdk_notes_server.py --port P [--name NAME] [--event-store]

Tools `note_add`, `note_count`, `learn` (adds a tool, announces `tools/list_changed`) and `echo`
(the same name as `sdk_server.py`'s, answering `NAME:text` so a test sees which member ran it), the
prompt `summary`, the resource `notes://index` and the template `notes://{id}`. Serves `GET /healthz`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from event_store import InMemoryEventStore, per_session_event_stores  # type: ignore[import-not-found]
from sdk_server import parse_args  # type: ignore[import-not-found]


def build_server(name: str) -> MCPServer:
    server: MCPServer = MCPServer(name=name, instructions=f"{name} keeps notes.")
    notes: list[str] = []

    @server.tool()
    def note_add(text: str) -> int:
        """Keep a note; returns how many there are."""
        notes.append(text)
        return len(notes)

    @server.tool()
    def note_count() -> int:
        """How many notes this instance keeps."""
        return len(notes)

    @server.tool()
    def echo(text: str) -> str:
        """Return `NAME:text` (this server's --name)."""
        return f"{name}:{text}"

    @server.tool()
    async def learn(ctx: Context, tool: str) -> str:
        """Add a tool named `tool` (it answers its own name) and announce the list change."""
        server.add_tool(lambda: tool, name=tool, description=f"learned: {tool}")
        await ctx.session.send_tool_list_changed()  # on the session's standalone stream
        return f"learned {tool}"

    @server.prompt()
    def summary(topic: str) -> str:
        """Ask for a summary of the notes on `topic`."""
        return f"Summarize the notes about {topic}."

    @server.resource("notes://index")
    def index() -> str:
        """Every note, one a line."""
        return "\n".join(notes) or f"{name}: no notes"

    @server.resource("notes://{note_id}")
    def note(note_id: str) -> str:
        """One note by its number."""
        return notes[int(note_id)] if note_id.isdigit() and int(note_id) < len(notes) else "none"

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return server


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    server = build_server(args.name)
    app = server.streamable_http_app(
        json_response=args.json_response,
        event_store=InMemoryEventStore() if args.event_store else None,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=args.host,
    )
    per_session_event_stores(server.session_manager)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
