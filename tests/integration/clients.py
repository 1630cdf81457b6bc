"""Thin helpers around the official MCP Python SDK client (mcp 2.3.0).

The SDK's HTTP client is `httpx2` (not `httpx`). `streamable_http_client()` yields only the two
streams and keeps its transport private, so the session id is captured with an httpx2 response
hook (`HttpTrace`), which also records every request (method, Last-Event-ID, status) so tests can
see what the SDK did on the wire, e.g. its resumption GETs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client, ClientSession
from mcp.client.session import MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import LATEST_HANDSHAKE_VERSION

GetSessionId = Callable[[], str | None]


@dataclass
class WireRecord:
    method: str
    url: str
    status: int
    session_id: str | None
    last_event_id: str | None
    protocol_version: str | None
    content_type: str | None


@dataclass
class HttpTrace:
    """Records each HTTP exchange; remembers the newest `Mcp-Session-Id` the server returned."""

    session_id: str | None = None
    records: list[WireRecord] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        req = response.request
        sid = response.headers.get("mcp-session-id")
        if sid:
            self.session_id = sid
        self.records.append(
            WireRecord(
                method=req.method,
                url=str(req.url),
                status=response.status_code,
                session_id=req.headers.get("mcp-session-id"),
                last_event_id=req.headers.get("last-event-id"),
                protocol_version=req.headers.get("mcp-protocol-version"),
                content_type=response.headers.get("content-type"),
            )
        )

    def get_session_id(self) -> str | None:
        return self.session_id

    def resumption_gets(self) -> list[WireRecord]:
        return [r for r in self.records if r.method == "GET" and r.last_event_id]

    def http_client(
        self, timeout: float = 60.0, read_timeout: float = 300.0, headers: dict[str, str] | None = None
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout, read=read_timeout),
            headers=headers,
            event_hooks={"response": [self.on_response]},
        )


async def initialize(session: ClientSession, protocol_version: str | None = None) -> types.InitializeResult:
    """The initialize handshake, optionally offering `protocol_version` (e.g. "2025-03-26").

    `ClientSession.initialize()` always offers LATEST_HANDSHAKE_VERSION (2025-11-25); for any other
    version this sends the request itself, then `adopt()`s the result (which also makes the
    transport send `MCP-Protocol-Version: <negotiated>` on later requests) and sends
    notifications/initialized.
    """
    if protocol_version is None or protocol_version == LATEST_HANDSHAKE_VERSION:
        return await session.initialize()
    result = await session.send_request(
        types.InitializeRequest(
            params=types.InitializeRequestParams(
                protocol_version=protocol_version,
                capabilities=types.ClientCapabilities(),
                client_info=types.Implementation(name="mcp-gateway-tests", version="0"),
            )
        ),
        types.InitializeResult,
    )
    session.adopt(result)
    await session.send_notification(types.InitializedNotification())
    return result


@asynccontextmanager
async def sdk_session(
    url: str,
    *,
    protocol_version: str | None = None,
    message_handler: MessageHandlerFnT | None = None,
    read_timeout_seconds: float | None = None,
    terminate_on_close: bool = True,
    headers: dict[str, str] | None = None,
    trace: HttpTrace | None = None,
) -> AsyncIterator[tuple[ClientSession, GetSessionId]]:
    """`async with sdk_session(url) as (session, get_session_id)`: an initialized (legacy, sessionful)
    ClientSession over Streamable HTTP. `get_session_id()` returns the Mcp-Session-Id the server issued.
    Pass your own `trace` to inspect the wire afterwards."""
    trace = trace or HttpTrace()
    async with (
        trace.http_client(headers=headers) as http,
        streamable_http_client(url, http_client=http, terminate_on_close=terminate_on_close) as (read, write),
        ClientSession(
            read, write, message_handler=message_handler, read_timeout_seconds=read_timeout_seconds
        ) as session,
    ):
        await initialize(session, protocol_version)
        yield session, trace.get_session_id


@asynccontextmanager
async def sdk_client(
    url: str, *, trace: HttpTrace | None = None, **client_kwargs: Any
) -> AsyncIterator[tuple[Client, GetSessionId]]:
    """The high-level `mcp.Client` forced to the initialize handshake (`mode="legacy"`; the default
    "auto" first probes `server/discover` at 2026-07-28)."""
    trace = trace or HttpTrace()
    client_kwargs.setdefault("mode", "legacy")
    async with (
        trace.http_client() as http,
        Client(streamable_http_client(url, http_client=http), **client_kwargs) as client,
    ):
        yield client, trace.get_session_id


@dataclass
class Progress:
    progress: float
    total: float | None
    message: str | None


async def call_with_progress(
    session: ClientSession | Client,
    tool: str,
    args: dict[str, Any] | None = None,
    read_timeout_seconds: float | None = None,
) -> tuple[types.CallToolResult, list[Progress]]:
    """Call `tool` with a progress token; returns (result, every progress notification received)."""
    seen: list[Progress] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(Progress(progress, total, message))

    if isinstance(session, Client):
        result = await session.call_tool(
            tool, args or {}, read_timeout_seconds=read_timeout_seconds, progress_callback=on_progress
        )
    else:
        result = await session.call_tool(
            tool, args or {}, read_timeout_seconds=read_timeout_seconds, progress_callback=on_progress
        )
    assert isinstance(result, types.CallToolResult)
    return result, seen


def text_of(result: types.CallToolResult) -> str:
    """Concatenated text content of a tool result."""
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))
