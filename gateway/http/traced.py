"""The server span of an MCP request (tracing on only; `GatewayApp` skips this module when off).

The span continues the client's W3C trace context: the `traceparent`/`tracestate` headers, or
else the SEP-414 keys in the body's `params._meta` (2026-07-28 clients put it there; any era is
read). To name the span after the JSON-RPC method and tool before anything runs, a POST body is
read first (up to --max-body-bytes) and replayed to the endpoint unchanged. The span covers the
whole response, an SSE body included; what happens behind it (upstream call, Redis, the pump)
nests under it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.http.requests import McpRequest
from gateway.tracing import attributes as a
from gateway.tracing.api import Tracer
from gateway.wire import protocol

Endpoint = Callable[[Request], Awaitable[Response]]


async def serve(endpoint: Endpoint, tracer: Tracer, max_body: int, scope: Scope, receive: Receive, send: Send) -> None:
    headers = Headers(scope=scope)
    method: str = scope["method"]
    described = a.Described()
    declared = headers.get("content-length", "")
    if method == "POST" and not (declared.isdigit() and int(declared) > max_body):  # else refused unread
        raw, receive = await buffered(receive, max_body)
        described = a.describe(raw)
    parent = tracer.extract(headers) or tracer.extract(described.carrier)
    pool = scope.get("path_params", {}).get("pool")
    route = "/mcp/{pool}" if pool else "/mcp"
    attrs = {**described.attrs, a.HTTP_METHOD: method, a.ROUTE: route}
    if pool:
        attrs[a.POOL] = pool
    version = headers.get(protocol.H_VERSION)
    if version:
        attrs[a.PROTOCOL] = version
    attrs[a.ERA] = "stateless" if version and protocol.is_stateless(version) else "sessionful"
    session = headers.get(protocol.H_SESSION)
    if session:
        attrs[a.SESSION] = a.session_prefix(session)
    if protocol.H_LAST_EVENT_ID in headers:
        attrs[a.CURSOR] = headers[protocol.H_LAST_EVENT_ID]
    name = described.span_name if described.method else f"{method} {route}"
    with tracer.span(name, kind="server", parent=parent, attrs=attrs) as span:
        response = await endpoint(McpRequest(scope, receive, send))
        span.set(a.HTTP_STATUS, response.status_code)
        created = response.headers.get(protocol.H_SESSION)
        if created and not session:
            span.set(a.SESSION, a.session_prefix(created))  # initialize: the session it made
        if response.status_code >= 400:
            code = a.error_code(bytes(response.body)) if hasattr(response, "body") else None
            if code is not None:
                span.set(a.RPC_CODE, str(code))
            if response.status_code >= 500:
                span.error(str(code) if code is not None else str(response.status_code))
            else:
                span.set("error.type", str(code) if code is not None else str(response.status_code))
        await response(scope, receive, send)


async def buffered(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """Read the body (stopping past `limit` bytes) and a `receive` that replays what was read."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False) or size > limit:
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return body, replay
