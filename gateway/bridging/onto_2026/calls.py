"""Sending a bridged request to a 2026-07-28 upstream: the routing headers (with the tool's
`Mcp-Param-*`, from the `x-mcp-header` annotations this replica has seen), and the answer as a
whole JSON message or an open SSE stream.

A tool whose annotations this replica has not seen is sent without `Mcp-Param-*`; the upstream then
refuses it with HeaderMismatch, and the gateway does what transports §Client Behavior asks of a
client: list the tools again and retry once with the headers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.bridging.onto_2026.headers import HeaderMap, header_map, routing_headers, without_invalid_tools
from gateway.bridging.onto_2026.translate import upstream_message
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.wire import protocol

HEADER_MISMATCH = -32020  # 2026-07-28 transports §Server Validation
MAX_TOOLS = 10_000  # annotations kept per pool (a list past this is used, not kept)
MAX_LIST_PAGES = 20  # pages of tools/list read when refreshing the annotations


@dataclass(frozen=True)
class Reply:
    """An upstream answer: a whole JSON message, or an open SSE stream (the caller closes it)."""

    message: dict[str, Any] | None = None
    stream: UpstreamResponse | None = None


class ToolHeaders:
    """Per pool, each tool's `x-mcp-header` map (None: an invalid annotation), learnt from the
    tools/list answers this replica relays or fetches. Owned by the bridge; bounded per pool."""

    def __init__(self) -> None:
        self._maps: dict[str, dict[str, HeaderMap | None]] = {}

    def learn(self, pool: str, result: Any) -> None:
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list):
            return
        known = self._maps.setdefault(pool, {})
        for tool in tools:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str) and len(known) < MAX_TOOLS:
                known[tool["name"]] = header_map(tool.get("inputSchema"))

    def of(self, pool: str, tool: Any) -> HeaderMap | None:
        return self._maps.get(pool, {}).get(tool) if isinstance(tool, str) else None


class Caller:
    def __init__(self, upstream: UpstreamClient, tools: ToolHeaders, max_body: int) -> None:
        self._upstream = upstream
        self.tools = tools
        self._max_body = max_body

    async def send(
        self, pool: str, instance: str, base: Mapping[str, str], message: Mapping[str, Any], init: Mapping[str, Any]
    ) -> Reply:
        reply = await self._once(pool, instance, base, message)
        error = reply.message.get("error") if reply.message is not None else None
        if message.get("method") == "tools/call" and isinstance(error, dict) and error.get("code") == HEADER_MISMATCH:
            await self._refresh(pool, instance, base, init)
            reply = await self._once(pool, instance, base, message)
        if reply.message is not None and message.get("method") == "tools/list":
            self.tools.learn(pool, reply.message.get("result"))
            reply = Reply(message=without_invalid_tools(reply.message))
        return reply

    async def _once(self, pool: str, instance: str, base: Mapping[str, str], message: Mapping[str, Any]) -> Reply:
        params = message.get("params")
        tool = params.get("name") if isinstance(params, dict) else None
        headers = {**base, **routing_headers(message, self.tools.of(pool, tool))}
        headers["Content-Type"] = protocol.JSON
        headers["Accept"] = f"{protocol.JSON}, {protocol.SSE}"
        body = json.dumps(message).encode()
        # One attempt past the connect: a 2026-07-28 request that reached the upstream may have run.
        response = await self._upstream.send("POST", instance, headers, body)
        if response.status == 200 and response.is_sse:
            return Reply(stream=response)
        payload = await response.read(self._max_body)
        if response.content_type != protocol.JSON:
            raise errors.UpstreamError(f"Bad upstream answer: HTTP {response.status}, {response.content_type!r}")
        try:
            answer = json.loads(payload)
        except ValueError as exc:
            raise errors.UpstreamError(f"Bad upstream answer: {exc}") from exc
        if not isinstance(answer, dict):
            raise errors.UpstreamError("Bad upstream answer: not one JSON-RPC message")
        return Reply(message=answer)

    async def _refresh(self, pool: str, instance: str, base: Mapping[str, str], init: Mapping[str, Any]) -> None:
        """transports §Client Behavior: on HeaderMismatch, list the tools again (every page)."""
        cursor: Any = None
        for page in range(MAX_LIST_PAGES):
            request: dict[str, Any] = {"jsonrpc": "2.0", "id": f"mcpgw-tools-{page}", "method": "tools/list"}
            if cursor is not None:
                request["params"] = {"cursor": cursor}
            reply = await self._once(pool, instance, base, upstream_message(request, init, request["id"]))
            if reply.stream is not None:
                reply.stream.close()  # a list answered as a stream: not worth reading here
                return
            result = reply.message.get("result") if reply.message is not None else None
            self.tools.learn(pool, result)
            cursor = result.get("nextCursor") if isinstance(result, dict) else None
            if cursor is None:
                return
