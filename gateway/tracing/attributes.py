"""What a span says about an MCP request: semantic attribute names, and a body read for them.

Names follow the OpenTelemetry semantic conventions for MCP (`mcp.*`, `gen_ai.*`, `jsonrpc.*`;
status Development) where they exist; the gateway's own are under `mcpgw.*`. Span names follow
the convention `{mcp.method.name} {target}` (target: the tool or prompt name, when there is one).
A session id is a bearer credential: spans carry only its first 8 characters, as the logs do.
Pure functions: no IO, no OpenTelemetry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.tracing.api import CARRIER_KEYS, AttrValue

METHOD = "mcp.method.name"
SESSION = "mcp.session.id"  # the first 8 characters only
PROTOCOL = "mcp.protocol.version"
TOOL = "gen_ai.tool.name"
PROMPT = "gen_ai.prompt.name"
RESOURCE = "mcp.resource.uri"
REQUEST_ID = "jsonrpc.request.id"
RPC_CODE = "rpc.response.status_code"  # the JSON-RPC error code of an error answer
HTTP_METHOD = "http.request.method"
HTTP_STATUS = "http.response.status_code"
ROUTE = "http.route"
URL = "url.full"
SERVER = "server.address"
PORT = "server.port"
DB_SYSTEM = "db.system.name"
DB_OPERATION = "db.operation.name"
ERA = "mcpgw.era"  # sessionful protocol version, or the stateless one
POOL = "mcpgw.pool"
STREAM = "mcpgw.stream.id"
STREAM_KIND = "mcpgw.stream.kind"
EVENTS = "mcpgw.stream.events"
PENDING = "mcpgw.stream.pending"
CURSOR = "mcpgw.stream.cursor"
HOLDER = "mcpgw.lease.previous_holder"
OUTCOME = "mcpgw.outcome"
TASK = "mcpgw.task.id"  # the first 8 characters only
GAP_REASON = "mcpgw.gap.reason"
LOST = "mcpgw.gap.lost_requests"

SESSION_PREFIX = 8
TARGETS = {"tools/call": TOOL, "prompts/get": PROMPT}  # methods whose span name carries a target


def session_prefix(session_id: str) -> str:
    return session_id[:SESSION_PREFIX]


@dataclass(frozen=True)
class Described:
    """The first JSON-RPC message of a POST body, as far as spans care."""

    method: str = ""
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    carrier: dict[str, str] = field(default_factory=dict)  # SEP-414 trace context in params._meta
    target: str = ""

    @property
    def span_name(self) -> str:
        if not self.method:
            return "mcp"
        return f"{self.method} {self.target}" if self.target else self.method


def describe(raw: bytes) -> Described:
    """Method, id, tool/prompt name and `_meta` trace context of a body (batch: its first message)."""
    try:
        decoded: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return Described()
    if isinstance(decoded, list):
        decoded = decoded[0] if decoded else None
    if not isinstance(decoded, dict):
        return Described()
    method = decoded.get("method")
    attrs: dict[str, AttrValue] = {}
    rid = decoded.get("id")
    if isinstance(rid, str | int) and not isinstance(rid, bool):
        attrs[REQUEST_ID] = str(rid)
    params = decoded.get("params")
    params = params if isinstance(params, dict) else {}
    target = ""
    if isinstance(method, str):
        attrs[METHOD] = method
        key = TARGETS.get(method)
        name = params.get("name")
        if key is not None and isinstance(name, str):
            attrs[key] = target = name
        uri = params.get("uri")
        if method.startswith("resources/") and isinstance(uri, str):
            attrs[RESOURCE] = uri
    else:
        method = ""
    meta = params.get("_meta")
    carrier = {k: v for k in CARRIER_KEYS if isinstance(meta, dict) and isinstance(v := meta.get(k), str)}
    return Described(method=method, attrs=attrs, carrier=carrier, target=target)


def error_code(body: bytes) -> int | None:
    """The JSON-RPC error code of a JSON error answer (None if it is not one)."""
    try:
        decoded: Any = json.loads(body)
    except (ValueError, RecursionError):
        return None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None
