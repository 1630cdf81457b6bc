"""The stateless era (MCP 2026-07-28): POST only, no sessions, nothing written to Redis
(except an Idempotency-Key record, when the client sends that header).

Each request goes to any healthy instance of the pool with every `Mcp-*` header forwarded
unchanged; the routing headers are checked against the body first. Closing the response
stream cancels the request: the upstream response is closed as soon as the client goes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.eras.idempotent import Idempotency, Ticket
from gateway.eras.responses import client_headers, error_response, read_body, sse_response
from gateway.store.idempotency import IdempotencyRecord
from gateway.upstream.client import HeaderPolicy, UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.wire import protocol

# 2026-07-28 basic/transports: methods whose Mcp-Name header mirrors a body parameter.
NAME_BEARING_METHODS: Mapping[str, str] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}


def check_routing_headers(headers: Mapping[str, str], message: Mapping[str, Any]) -> None:
    """2026-07-28 basic/transports: Mcp-Method / Mcp-Name must match the body (HeaderMismatch)."""
    method = message.get("method")
    if method is None:
        return  # responses carry no routing headers
    header_method = headers.get(protocol.H_METHOD)
    header_name = headers.get(protocol.H_NAME)
    if header_method is None or protocol.field_value(header_method) != method:
        raise errors.HeaderMismatch("Mcp-Method header does not match the request body's method")
    name_key = NAME_BEARING_METHODS.get(str(method))
    params = message.get("params")
    if (
        name_key is not None
        and isinstance(params, dict)
        and params.get(name_key) is not None
        and (header_name is None or protocol.field_value(header_name) != str(params[name_key]))
    ):
        raise errors.HeaderMismatch(f"Mcp-Name header does not match the request body's {name_key!r}")


async def _relay_stream(response: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.chunks():
            yield chunk
    finally:
        response.close()  # client gone or stream done: the upstream sees the connection close


class StatelessEndpoint:
    def __init__(
        self,
        *,
        pools: Pools,
        upstream: UpstreamClient,
        headers: HeaderPolicy,
        max_body: int,
        idempotency: Idempotency,
    ) -> None:
        self._headers = headers
        self._pools = pools
        self._upstream = upstream
        self._max_body = max_body
        self._idempotency = idempotency

    async def handle(self, request: Request, pool_name: str | None) -> Response:
        if request.method != "POST":
            # 2026-07-28 basic/transports: no GET stream and no session to DELETE.
            raise errors.MethodNotAllowed(f"Method Not Allowed: {request.method} in the stateless era")
        protocol.check_post_headers(request.headers.get("content-type"), request.headers.get("accept"))
        raw = await read_body(request, self._max_body)
        body = protocol.parse_body(raw, "2026-07-28")
        ticket: Ticket | None = None
        try:
            check_routing_headers(request.headers, body.messages[0].raw)
            opened = await self._idempotency.open(request, raw)  # the one Redis write, with the header only
            if isinstance(opened, IdempotencyRecord):
                return self._idempotency.stored_response(opened)
            ticket = opened
            pool = self._pools.get(pool_name)
            instance = self._pools.pick(pool.name)
            headers = self._headers.build(request.headers.items(), pool.name)
            response = await self._upstream.send("POST", instance, headers, raw)
        except errors.UpstreamUnavailable as exc:
            if ticket is not None:
                await self._idempotency.not_sent(ticket)  # never reached an upstream: a retry may run it
            return error_response(exc, body.first_id)
        except errors.GatewayError as exc:
            if ticket is not None:
                await self._idempotency.failed(ticket, exc, body.first_id)
            return error_response(exc, body.first_id)
        headers = client_headers(response.headers, None)
        if response.is_sse:
            stream = _relay_stream(response)
            return sse_response(stream if ticket is None else self._idempotency.recording(ticket, stream), headers)
        payload = await response.read(self._max_body)
        if ticket is not None:
            await self._idempotency.answered(ticket, response.status, payload, response.content_type or protocol.JSON)
        return Response(payload, status_code=response.status, headers=headers)
