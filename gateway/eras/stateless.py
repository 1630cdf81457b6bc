"""The stateless era (MCP 2026-07-28): POST only, no sessions, nothing written to Redis
(except an Idempotency-Key record, when the client sends that header, served tasks, the
response cache's entries, and the per-client limits' counters).

Each request goes to any healthy instance of the pool with every `Mcp-*` header forwarded
unchanged; the routing headers are checked against the body first. Closing the response
stream cancels the request: the upstream response is closed as soon as the client goes.
Only gateway-served tasks (`gateway/tasks/`, pools with `--task-tools`) write to Redis: their
`tools/call` and `tasks/*` requests are answered here, and `server/discover` advertises them.
The shared response cache (`gateway/caching/`, SEP-2549) answers lists, reads and discovery from
Redis while their ttlMs lasts, and keeps the upstream's cacheable answers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.responses import client_headers, error_response, read_body, sse_response, with_cookies
from gateway.bridging.onto_2025.bridge import Bridge
from gateway.caching.service import Pending, ResponseCache
from gateway.policy.governor import Governor, filtered_stream
from gateway.replay.idempotent import Idempotency, Ticket
from gateway.store.idempotency import IdempotencyRecord
from gateway.tasks.passthrough import Route, TaskRoutes
from gateway.tasks.protocol import NAME_PARAM, SERVED_METHODS, merge_discover, negotiated
from gateway.tasks.service import Call, TaskService
from gateway.upstream.client import HeaderPolicy, UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.wire import answers, caching, protocol

# 2026-07-28 basic/transports: methods whose Mcp-Name header mirrors a body parameter.
NAME_BEARING_METHODS: Mapping[str, str] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    # tasks extension §Streamable HTTP: Routing Headers: Mcp-Name carries params.taskId.
    "tasks/get": NAME_PARAM,
    "tasks/update": NAME_PARAM,
    "tasks/cancel": NAME_PARAM,
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


async def _relay_stream(response: UpstreamResponse, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        response.close()  # client gone or stream done: the upstream sees the connection close


def _result(request_id: Any, result: Mapping[str, Any]) -> Response:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
    return Response(body, media_type=protocol.JSON)


async def _answer_of(response: UpstreamResponse, request_id: Any, limit: int) -> dict[str, Any] | None:
    """The JSON-RPC response to `request_id` in a whole upstream answer (JSON or SSE)."""
    return answers.answer_in(await response.read(limit), response.is_sse, request_id)


def _partition(principal: str, request: Request) -> str | None:
    """Whose private cache entries this caller may see (caching §Cache Scope: per authorization context)."""
    sent = {name: request.headers[name] for name in ("authorization", "cookie") if name in request.headers}
    return caching.partition_of(principal, sent)


class StatelessEndpoint:
    def __init__(
        self,
        *,
        pools: Pools,
        upstream: UpstreamClient,
        headers: HeaderPolicy,
        max_body: int,
        idempotency: Idempotency,
        tasks: TaskService | None = None,
        routes: TaskRoutes | None = None,
        cache: ResponseCache | None = None,
        bridge: Bridge | None = None,
        policy: Governor | None = None,
        max_line: int = 1 << 20,
    ) -> None:
        self._policy = policy
        self._max_line = max_line
        self._headers = headers
        self._pools = pools
        self._upstream = upstream
        self._max_body = max_body
        self._idempotency = idempotency
        self._tasks = tasks
        self._routes = routes
        self._cache = cache
        self._bridge = bridge

    async def handle(self, request: Request, pool_name: str | None) -> Response:
        if request.method != "POST":
            # 2026-07-28 basic/transports: no GET stream and no session to DELETE.
            raise errors.MethodNotAllowed(f"Method Not Allowed: {request.method} in the stateless era")
        protocol.check_post_headers(request.headers.get("content-type"), request.headers.get("accept"))
        raw = await read_body(request, self._max_body)
        body = protocol.parse_body(raw, "2026-07-28")
        message = body.messages[0]
        raw_params = message.raw.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        with_tasks = message.is_request and negotiated(params)
        principal: str = request.state.principal
        ticket: Ticket | None = None
        try:
            check_routing_headers(request.headers, message.raw)
            if self._policy is not None and message.method is not None and message.is_request:
                await self._policy.check(request, self._pools.get(pool_name).name, message.method, params, message.id)
            placed: str | None = None  # era bridging: a 2025-only instance answers in 2026 shape
            if self._bridge is not None:
                bridged = await self._bridge.serve(request, message, self._pools.get(pool_name).name)
                if isinstance(bridged, Response):
                    return bridged
                placed = bridged  # a 2026 instance the bridge picked: the request goes there
            opened = await self._idempotency.open(request, raw)  # the one Redis write, with the header only
            if isinstance(opened, IdempotencyRecord):
                return self._idempotency.stored_response(opened)
            ticket = opened
            pool = self._pools.get(pool_name)
            headers = self._headers.build(request.headers.items(), pool.name)
            instance = None
            if self._routes is not None and with_tasks and message.method in SERVED_METHODS:
                instance = await self._routes.instance_for(params, principal, pool.name)  # an upstream's own task
            tasks = self._tasks if self._tasks is not None and self._tasks.serves(pool.name) else None
            if instance is None and tasks is not None and message.is_request:
                pick = functools.partial(self._pools.pick, pool.name)
                secret = self._headers.credentials(pool.name)
                served = await tasks.intercept(Call(pool.name, message, principal, pick, headers, secret))
                if served is not None:
                    return await self._answered(ticket, _result(message.id, served))
            pending: Pending | None = None
            # tasks: a served pool's discover is merged with the extension, so it is not cached.
            merged = tasks is not None and message.method == "server/discover"
            if self._cache is not None and instance is None and message.is_request and not merged:
                partition = _partition(principal, request)
                asked = caching.directives(request.headers.get("cache-control"))
                hit, pending = await self._cache.lookup(pool.name, message.method, params, partition, asked)
                if hit is not None:
                    # the cache keeps lists whole: each principal is served its own filtered view
                    served = Governor.filter_result(request, caching.served(hit.result, hit.remaining_ms))
                    return await self._answered(ticket, _result(message.id, served))
            instance = instance or placed or self._pools.pick(pool.name)
            response = await self._upstream.send("POST", instance, headers, raw)
            if tasks is not None and message.method == "server/discover":
                return await self._answered(ticket, await self._discover(response, message.id))
            to_client = client_headers(response.headers, None)
            # tasks extension: an upstream's own task is routed to its instance from now on.
            watch = self._routes if with_tasks and message.method == "tools/call" else None
            route = Route(instance, principal, pool.name)
            if response.status != 200:
                pending = None  # caching §Cacheable Results: only successful results are kept
            if response.is_sse:
                chunks = response.chunks()
                if pending is not None and self._cache is not None:
                    chunks = self._cache.offer_stream(pending, chunks, message.id)
                if self._cache is not None and message.method == "subscriptions/listen":
                    chunks = self._cache.watch_stream(pool.name, chunks)  # its notifications invalidate
                if watch is not None:
                    chunks = watch.record_stream(chunks, message.id, route)
                if (checked := Governor.filters(request)) is not None:
                    chunks = filtered_stream(checked, chunks, self._max_line)  # after the cache took it whole
                stream = _relay_stream(response, chunks)
                if ticket is not None:
                    stream = self._idempotency.recording(ticket, stream)
                return sse_response(stream, to_client)
            payload = await response.read(self._max_body)
            if watch is not None:
                await watch.record_json(payload, message.id, route)  # before the client sees the task
            if pending is not None and self._cache is not None:
                await self._cache.offer_json(pending, payload, message.id)
            payload = Governor.filter_payload(request, payload)  # after the cache took it whole
        except errors.UpstreamUnavailable as exc:
            if ticket is not None:
                await self._idempotency.not_sent(ticket)  # never reached an upstream: a retry may run it
            return error_response(exc, body.first_id)
        except errors.GatewayError as exc:
            if ticket is not None:
                await self._idempotency.failed(ticket, exc, body.first_id)
            return error_response(exc, body.first_id)
        if ticket is not None:
            await self._idempotency.answered(ticket, response.status, payload, response.content_type or protocol.JSON)
        return with_cookies(Response(payload, status_code=response.status, headers=to_client), to_client)

    async def _answered(self, ticket: Ticket | None, answer: Response) -> Response:
        """A JSON answer made here (a served task, a merged discover), kept for its Idempotency-Key."""
        if ticket is not None:
            await self._idempotency.answered(ticket, answer.status_code, bytes(answer.body), protocol.JSON)
        return answer

    async def _discover(self, response: UpstreamResponse, request_id: Any) -> Response:
        """tasks §Capability Negotiation: the upstream's discover result plus the extension."""
        answer = await _answer_of(response, request_id, self._max_body)
        if answer is None:
            raise errors.UpstreamError("Bad upstream answer: no response to server/discover")
        if isinstance(answer.get("result"), dict):
            answer["result"] = merge_discover(answer["result"])
        return Response(json.dumps(answer), status_code=response.status, media_type=protocol.JSON)
