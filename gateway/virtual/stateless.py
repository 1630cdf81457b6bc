"""A virtual server for 2026-07-28 (stateless) clients: no session, each request answered from the
members' answers (asked on any healthy instance of their pools, or from the shared response cache)
or routed to one member by its prefixed name (`Mcp-Name` is checked against the prefixed name, and
the member gets its own name). Nothing is written to Redis but the response cache's entries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__, errors
from gateway.asgi.responses import client_headers, error_response, read_body, sse_response, with_cookies
from gateway.caching.service import ResponseCache
from gateway.eras.stateless import check_routing_headers
from gateway.tasks.protocol import NAME_PARAM, SERVED_METHODS, negotiated, unknown_task
from gateway.upstream.client import HeaderPolicy, UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.virtual.calls import BROADCAST, Ask, Calls, Routed
from gateway.virtual.members import MemberUnavailable, replaced
from gateway.virtual.merging import LISTS, merge_capabilities, merge_instructions
from gateway.virtual.naming import VirtualServer
from gateway.wire import answers, caching, protocol, sse

log = logging.getLogger("gateway.virtual.stateless")

SERVER_INFO = "io.modelcontextprotocol/serverInfo"


def merge_discover(server: VirtualServer, results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """server/discover of the virtual server: the versions every member supports (the first member's
    when they share none), the union of capabilities, its own name, the members' instructions."""
    answered = [results[p] for p in server.members if p in results]
    versions = [v for v in answered[0].get("supportedVersions") or () if isinstance(v, str)]
    common = [v for v in versions if all(v in (r.get("supportedVersions") or ()) for r in answered)]
    result: dict[str, Any] = {
        "resultType": "complete",
        "supportedVersions": common or versions,
        "capabilities": merge_capabilities([r.get("capabilities") or {} for r in answered]),
        "_meta": {SERVER_INFO: {"name": server.name, "version": __version__}},
    }
    instructions = merge_instructions(server, results)
    if instructions is not None:
        result["instructions"] = instructions
    return result


def _result(request_id: Any, result: Any) -> Response:
    return Response(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}), media_type=protocol.JSON)


async def _closing(response: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.chunks():
            yield chunk
    finally:
        response.close()  # client gone or stream done: closing is the cancellation (2026-07-28)


def _task_route(server: VirtualServer, message: Mapping[str, Any]) -> Routed:
    """tasks/get, update, cancel: the member whose name prefixes the task id, with its own id."""
    raw = message.get("params")
    params = dict(raw) if isinstance(raw, dict) else {}
    split = server.split(str(params.get(NAME_PARAM, "")))
    if split is None:
        raise unknown_task()
    params[NAME_PARAM] = split[1]
    return Routed(split[0], {**message, "params": params}, split[1])


def _task_named(server: VirtualServer, pool: str, request_id: Any, data: bytes) -> bytes:
    """The answer to `request_id` with its task id (a CreateTaskResult's, a task's) named after `pool`."""
    try:
        answer = json.loads(data)
    except ValueError:
        return data
    result = answer.get("result") if isinstance(answer, dict) and answer.get("id") == request_id else None
    if not isinstance(result, dict) or not isinstance(result.get(NAME_PARAM), str):
        return data
    result[NAME_PARAM] = server.prefixed(pool, result[NAME_PARAM])
    return json.dumps(answer).encode()


async def _tasks_named(
    server: VirtualServer, pool: str, request_id: Any, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    parser = sse.Parser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            data = _task_named(server, pool, request_id, event.data.encode()).decode() if event.data else None
            yield sse.encode(data, id=event.id, event=event.event, retry=event.retry)


class StatelessVirtual:
    def __init__(
        self,
        *,
        pools: Pools,
        upstream: UpstreamClient,
        policy: HeaderPolicy,
        cache: ResponseCache | None,
        max_body: int,
    ) -> None:
        self._pools = pools
        self._upstream = upstream
        self._policy = policy
        self._cache = cache
        self._max_body = max_body
        self._calls = Calls()

    async def handle(self, request: Request, server: VirtualServer) -> Response:
        if request.method != "POST":
            # 2026-07-28 basic/transports: no GET stream and no session to DELETE.
            raise errors.MethodNotAllowed(f"Method Not Allowed: {request.method} in the stateless era")
        protocol.check_post_headers(request.headers.get("content-type"), request.headers.get("accept"))
        body = protocol.parse_body(await read_body(request, self._max_body), "2026-07-28")
        message = body.messages[0]
        try:
            check_routing_headers(request.headers, message.raw)
            if not message.is_request:
                return Response(status_code=202)  # no member is waiting for it: no session, no stream
            raw_params = message.raw.get("params")
            params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
            ask = self._asker(request, params.get("_meta"))
            if message.method == "server/discover":
                found = await asyncio.gather(*(ask(p, "server/discover", params) for p in server.members))
                results = {p: r for p, r in zip(server.members, found, strict=True) if r is not None}
                if not results:
                    raise errors.UpstreamUnavailable(f"No member of virtual server {server.name!r} is available")
                return _result(message.id, merge_discover(server, results))
            kind = LISTS.get(str(message.method))
            if kind is not None:
                return _result(message.id, await self._calls.merged_list(server, ask, kind, params))
            if message.method in BROADCAST:
                await self._calls.broadcast(server, ask, message.raw)
                return _result(message.id, {})
            return await self._forward(request, server, ask, message.raw)
        except errors.GatewayError as exc:
            return error_response(exc, body.first_id)

    async def _forward(self, request: Request, server: VirtualServer, ask: Ask, message: Mapping[str, Any]) -> Response:
        method = str(message.get("method"))
        routed = (
            await self._calls.route(server, ask, message)
            if method not in SERVED_METHODS
            else _task_route(server, message)
        )
        headers = self._headers(request, routed.pool, method, routed.name)
        try:
            instance = self._pools.pick(routed.pool)
            response = await self._upstream.send("POST", instance, headers, json.dumps(routed.message).encode())
        except errors.UpstreamUnavailable:
            raise MemberUnavailable(f"Member {routed.pool!r} of this virtual server is unavailable") from None
        to_client = client_headers(response.headers, None)
        # tasks §Task Creation: a member's task id, named after its member, reaches it again (tasks/get).
        tasks = negotiated(routed.message.get("params")) and (method == "tools/call" or method in SERVED_METHODS)
        request_id = message.get("id")
        if response.is_sse:
            chunks = _closing(response)
            if tasks:
                chunks = _tasks_named(server, routed.pool, request_id, chunks)
            return sse_response(chunks, to_client)
        payload = await response.read(self._max_body)
        if tasks:
            payload = _task_named(server, routed.pool, request_id, payload)
        return with_cookies(Response(payload, status_code=response.status, headers=to_client), to_client)

    def _headers(self, request: Request, pool: str, method: str, name: str | None) -> dict[str, str]:
        """The client's headers for `pool`, routing headers naming what the member knows (2026-07-28
        basic/transports: Mcp-Method / Mcp-Name mirror the body the member gets)."""
        headers = replaced(self._policy.build(request.headers.items(), pool), {protocol.H_METHOD: method})
        headers = {k: v for k, v in headers.items() if k.lower() != protocol.H_NAME.lower()}
        if name is not None:
            headers[protocol.H_NAME] = name
        return headers

    def _asker(self, request: Request, meta: Any) -> Ask:
        """Ask a member on any healthy instance (or the response cache): None when it cannot answer.
        A request of the gateway's own (a list read to find a URI's owner) carries the client's
        `_meta` (2026-07-28: each request says its version and capabilities)."""
        partition = caching.partition_of(
            request.state.principal,
            {name: request.headers[name] for name in ("authorization", "cookie") if name in request.headers},
        )
        asked = caching.directives(request.headers.get("cache-control"))

        async def ask(pool: str, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
            if "_meta" not in params and isinstance(meta, dict):
                params = {**params, "_meta": meta}
            pending = None
            if self._cache is not None:
                hit, pending = await self._cache.lookup(pool, method, params, partition, asked)
                if hit is not None:
                    return dict(hit.result)
            message = {"jsonrpc": "2.0", "id": f"mcpgw-v-{pool}", "method": method, "params": params}
            try:
                instance = self._pools.pick(pool)
                response = await self._upstream.send(
                    "POST", instance, self._headers(request, pool, method, None), json.dumps(message).encode()
                )
                status = response.status
                answer = answers.answer_in(await response.read(self._max_body), response.is_sse, message["id"])
            except errors.UpstreamError as exc:
                log.info("virtual server member %s left out of %s: %s", pool, method, exc.message)
                return None
            result = answer.get("result") if answer is not None else None
            if not isinstance(result, dict):
                return None
            if pending is not None and self._cache is not None and status == 200 and answer is not None:
                await self._cache.offer_json(pending, json.dumps(answer).encode(), message["id"])
            return result

        return ask
