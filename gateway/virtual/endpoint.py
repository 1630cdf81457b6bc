"""The HTTP side of a virtual server (`/mcp/NAME`): initialize, requests, resume, DELETE.

Sessionful eras only, one message per POST. A call that a member answers with a stream is relayed
through the event log like any session's (resumable on any replica: its stream id names the member).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__, errors, logs
from gateway.asgi.responses import (
    StreamSlot,
    error_response,
    read_body,
)
from gateway.metrics import Metrics
from gateway.store.limits import Limiter
from gateway.store.sessions import SessionStore, new_record
from gateway.streams.relay import Relay
from gateway.virtual.calls import BROADCAST, Ask, Calls
from gateway.virtual.forwarding import Forwarder
from gateway.virtual.gets import Gets
from gateway.virtual.listening import member_request_id
from gateway.virtual.members import Members, MemberUnavailable
from gateway.virtual.merging import LISTS, initialize_result
from gateway.virtual.naming import (
    VirtualServer,
)
from gateway.virtual.record import UP, VirtualSession, VirtualSessions
from gateway.virtual.stateless import StatelessVirtual
from gateway.wire import cursor, protocol
from gateway.wire.protocol import H_LAST_EVENT_ID, H_SESSION, Body, Message

log = logging.getLogger("gateway.virtual.endpoint")


def _result(request_id: Any, result: Any, session_id: str) -> Response:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})
    return Response(body, media_type=protocol.JSON, headers={H_SESSION: session_id})


class VirtualEndpoint:
    def __init__(
        self,
        *,
        servers: tuple[VirtualServer, ...],
        members: Members,
        gets: Gets,
        forwarder: Forwarder,
        stateless: StatelessVirtual,
        sessions: VirtualSessions,
        store: SessionStore,
        relay: Relay,
        limiter: Limiter,
        metrics: Metrics,
        max_body: int,
        replica: str,
    ) -> None:
        self._servers = {s.name: s for s in servers}
        self._members = members
        self._gets = gets
        self._forwarder = forwarder
        self._stateless = stateless
        self._calls = Calls()
        self._sessions = sessions
        self._store = store
        self._relay = relay
        self._limiter = limiter
        self._metrics = metrics
        self._max_body = max_body
        self._replica = replica
        self._slots = itertools.count()

    def serves(self, name: str | None) -> bool:
        return name is not None and name in self._servers

    async def handle(self, request: Request, name: str, version: str) -> Response:
        server = self._servers[name]
        if protocol.is_stateless(version):
            return await self._stateless.handle(request, server)
        if request.method == "POST":
            return await self._post(request, server, version)
        if request.method == "GET":
            return await self._get(request, server)
        return await self._delete(request, server)

    async def _load(self, request: Request, server: VirtualServer) -> VirtualSession:
        session_id = request.headers.get(H_SESSION)
        if not session_id:
            # transports §Session Management: requests after initialize without the id -> 400
            raise errors.MissingSession("Bad Request: Mcp-Session-Id header is required")
        return await self._sessions.load(session_id, request.state.principal, server)

    # --- POST -----------------------------------------------------------------------------------

    async def _post(self, request: Request, server: VirtualServer, version: str) -> Response:
        protocol.check_post_headers(request.headers.get("content-type"), request.headers.get("accept"))
        raw = await read_body(request, self._max_body)
        body = protocol.parse_body(raw, version)
        if body.first_id is not None:
            logs.request_var.set(str(body.first_id))
        try:
            if body.is_batch:
                raise errors.InvalidRequest("Invalid Request: a virtual server takes one message per POST")
            if body.initialize is not None:
                return await self._initialize(request, server, body.initialize)
            vs = await self._load(request, server)
            message = body.messages[0]
            if not message.is_request:
                await self._pass_on(server, vs, message, request)
                return Response(status_code=202, headers={H_SESSION: vs.record.id})
            return await self._request(request, server, vs, body, raw)
        except errors.GatewayError as exc:
            return error_response(exc, body.first_id)

    async def _initialize(self, request: Request, server: VirtualServer, init: Message) -> Response:
        params = init.raw.get("params")
        opened = await asyncio.gather(*(self._members.open(p, params, request.headers) for p in server.members))
        results = {m.pool: r for m, r in opened if r is not None}
        if not results:
            raise errors.UpstreamUnavailable(f"No member of virtual server {server.name!r} is available")
        for member, _ in opened:
            if member.state != UP:
                log.warning("virtual server %s: member %s is down at initialize", server.name, member.pool)
        first = results[next(p for p in server.members if p in results)]
        version = str(first.get("protocolVersion") or protocol.DEFAULT_VERSION)
        session_id = protocol.new_session_id()
        await self._limiter.admit_session(request.state.client_key, session_id)
        record = new_record(
            session_id,
            pool=server.name,
            instance="",
            upstream_sid="",
            protocol=version,
            principal=request.state.principal,
            init_params=params,
        )
        await self._sessions.create(record, [m for m, _ in opened])
        self._metrics.sessions_created.inc()
        return _result(init.id, initialize_result(server, version, results, __version__), session_id)

    def _asker(self, vs: VirtualSession, headers: Mapping[str, str]) -> Ask:
        """Ask a member on its upstream session (re-opened as needed); a member that is down or
        fails leaves the merge (and `vs` keeps the member as it is now)."""

        async def ask(pool: str, method: str, params: dict[str, Any]) -> dict[str, Any] | None:
            message = {"jsonrpc": "2.0", "id": f"mcpgw-v-{pool}", "method": method, "params": params}
            try:
                member, answer = await self._members.ask(vs.record, vs.members[pool], headers, message)
            except (MemberUnavailable, errors.UpstreamError) as exc:
                log.info("virtual session %s: %s left out of %s: %s", vs.record.id[:8], pool, method, exc.message)
                return None
            vs.members[pool] = member
            result = answer.get("result")
            return result if isinstance(result, dict) else None

        return ask

    async def _pass_on(self, server: VirtualServer, vs: VirtualSession, message: Message, request: Request) -> None:
        """A notification from the client goes to every member that is up (the gateway sent each its
        own `initialized` already); an answer to a member's request (its id names the member, see
        `listening.py`) to that member, with its own id; any other answer to every member."""
        if message.method == "notifications/initialized":
            return
        raw: dict[str, Any] = dict(message.raw)
        pools = list(vs.members)
        owner = member_request_id(server, message.raw.get("id")) if message.is_response else None
        if owner is not None:
            pools, raw["id"] = [owner[0]], owner[1]
        payload = json.dumps(raw).encode()

        async def one(pool: str) -> None:
            member = vs.members.get(pool)
            if member is not None and member.state == UP:
                try:
                    _, response = await self._members.send(vs.record, member, request.headers, payload)
                    response.close()
                except errors.GatewayError as exc:
                    log.info("virtual session %s: message not passed to %s: %s", vs.record.id[:8], pool, exc.message)

        await asyncio.gather(*(one(pool) for pool in pools))

    async def _request(
        self, request: Request, server: VirtualServer, vs: VirtualSession, body: Body, raw: bytes
    ) -> Response:
        message = body.messages[0]
        raw_params = message.raw.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        if message.method == "ping":
            return _result(message.id, {}, vs.record.id)
        ask = self._asker(vs, request.headers)
        kind = LISTS.get(str(message.method))
        if kind is not None:
            return _result(message.id, await self._calls.merged_list(server, ask, kind, params), vs.record.id)
        if message.method in BROADCAST:
            await self._calls.broadcast(server, ask, message.raw)
            return _result(message.id, {}, vs.record.id)
        routed = await self._calls.route(server, ask, message.raw)
        return await self._forwarder.forward(request, server, vs, body, raw, routed)

    # --- GET: the notification stream, or a resume ---------------------------------------------

    async def _get(self, request: Request, server: VirtualServer) -> Response:
        protocol.check_get_accept(request.headers.get("accept"))
        vs = await self._load(request, server)
        last_event_id = request.headers.get(H_LAST_EVENT_ID)
        slot = StreamSlot(self._limiter, request.state.client_key, f"{self._replica}#{next(self._slots)}")
        if slot.capped:
            await self._limiter.admit_stream(slot.who, slot.member)
        try:
            if last_event_id is None:
                return await self._gets.listen(request, server, vs, slot)
            return await self._gets.resume(request, server, vs, cursor.parse_event_id(last_event_id), slot)
        except BaseException:
            await slot.release()
            raise

    # --- DELETE ---------------------------------------------------------------------------------

    async def _delete(self, request: Request, server: VirtualServer) -> Response:
        vs = await self._load(request, server)
        await asyncio.gather(*(self._members.close(m, request.headers) for m in vs.members.values()))
        await self._store.delete(vs.record.id)
        await self._limiter.release("sessions", request.state.client_key, vs.record.id)
        self._metrics.sessions_deleted.inc()
        return Response(status_code=200)
