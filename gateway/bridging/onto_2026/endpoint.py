"""The sessionful endpoint of a pool whose upstream speaks only 2026-07-28.

The gateway owns the session: `initialize` is answered from the upstream's `server/discover`, the
session record keeps the client's version and its initialize params (info and capabilities, sent
upstream in every request's `_meta`), and each request goes upstream statelessly. An answer that
is one JSON message and final goes back as JSON; anything else (progress, input-required rounds,
a batch) becomes a resumable stream in the session's event log (`rounds.py`); the standalone GET
stream is an upstream subscriptions/listen (`listen.py`). Resuming a stream (GET with
Last-Event-ID) is the sessionful endpoint's, unchanged, but for a standalone stream that ended.
Request ids are claimed as on the relayed path (`replay/`), so a repeat never runs twice.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.responses import error_response, read_body, sse_response
from gateway.bridging.onto_2026 import translate
from gateway.bridging.onto_2026.answers import Answers
from gateway.bridging.onto_2026.calls import Caller, Reply
from gateway.bridging.onto_2026.handshake import discover
from gateway.bridging.onto_2026.listen import Subscriptions, listen, open_listen
from gateway.bridging.onto_2026.pins import EraPins
from gateway.bridging.onto_2026.rounds import BridgedStream, Call, Rounds
from gateway.metrics import Metrics
from gateway.replay.idempotent import Idempotency
from gateway.replay.outcomes import Outcome
from gateway.replay.replays import Recorded, Replays, body_hash
from gateway.store.claims import Claim, Claims
from gateway.store.eventlog import EventLog
from gateway.store.limits import Limiter
from gateway.store.sessions import SessionRecord, SessionStore, new_record
from gateway.streams.relay import Relay
from gateway.tracing.api import NOOP, Tracer
from gateway.upstream.client import HeaderPolicy, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.wire import cursor, protocol
from gateway.wire.protocol import H_LAST_EVENT_ID, H_SESSION, Body, Message

DIRECTION = "2025-to-2026"
MCP_PREFIX = "mcp-"
# 2026-07-28 has no client-to-server notifications on this wire (cancellation is closing the
# response): a 2025 client's notifications are accepted and go no further, but for this one.
CANCELLED = "notifications/cancelled"


class Onto2026:
    def __init__(
        self,
        *,
        pins: EraPins,
        pools: Pools,
        sessions: SessionStore,
        relay: Relay,
        log_: EventLog,
        caller: Caller,
        answers: Answers,
        subscriptions: Subscriptions,
        claims: Claims,
        replays: Replays,
        idempotency: Idempotency,
        replica: str,
        headers: HeaderPolicy,
        limiter: Limiter,
        metrics: Metrics,
        max_body: int,
        max_batch: int,
        max_line: int,
        input_timeout: float,
        listen_check: float,
        tracer: Tracer = NOOP,
    ) -> None:
        self._subscriptions = subscriptions
        self._claims = claims
        self._replays = replays
        self._idempotency = idempotency
        self._replica = replica
        self._listen_check = listen_check
        self._pins = pins
        self._pools = pools
        self._sessions = sessions
        self._relay = relay
        self._log = log_
        self._caller = caller
        self._answers = answers
        self._headers = headers
        self._limiter = limiter
        self._metrics = metrics
        self._max_body = max_body
        self._max_batch = max_batch
        self._max_line = max_line
        self._input_timeout = input_timeout
        self._tracer = tracer
        self._counted = metrics.bridged.labels(DIRECTION)

    async def takes(self, request: Request, pool: str | None) -> bool:
        """Whether this request of a 2025-era client is the bridge's: every request to a pool pinned
        to 2026, but a resume (the sessionful endpoint's: the stream is in the event log like any
        other) other than that of an ended standalone stream."""
        if not self._pins.any_modern() or await self._pins.era_of(self._pools.get(pool).name) != "2026":
            return False
        if request.method == "GET" and H_LAST_EVENT_ID in request.headers:
            return await self._listen_ended(request)
        return True

    async def _listen_ended(self, request: Request) -> bool:
        """A resume of a standalone stream that ended with the client holding all of it (its
        upstream listen stream ended, or idled out): a new listen, not the relayed path's GET,
        which a 2026-07-28 upstream refuses (transports §Listening for Messages: the client may GET
        at any time). Anything else (a malformed id included) is the relayed path's resume."""
        session = request.headers.get(H_SESSION)
        try:
            position = cursor.parse_event_id(request.headers[H_LAST_EVENT_ID])
        except errors.GatewayError:
            return False
        if not session or not protocol.valid_session_id(session):
            return False
        meta = await self._log.meta(session, position.stream)
        return meta is not None and meta.kind == "get" and meta.done and position.seq >= meta.seq - 1

    async def handle(self, request: Request, pool: str | None, version: str) -> Response:
        if request.method == "POST":
            with self._tracer.span("mcp.bridge", attrs={"mcp.bridge.direction": DIRECTION}):
                return await self._post(request, pool, version)
        if request.method == "DELETE":
            return await self._delete(request, pool)
        return await self._listen(request, pool)

    def _base_headers(self, request: Request, pool: str) -> dict[str, str]:
        """The client's headers that cross (credentials, trace context), without its `Mcp-*` ones:
        the bridge writes the 2026-07-28 routing headers itself."""
        built = self._headers.build(request.headers.items(), pool)
        return {k: v for k, v in built.items() if not k.lower().startswith(MCP_PREFIX) and k.lower() != "accept"}

    async def _session(self, request: Request, pool: str | None) -> SessionRecord:
        session_id = request.headers.get(H_SESSION)
        if not session_id:
            # transports §Session Management: requests after initialize without the id -> 400
            raise errors.MissingSession("Bad Request: Mcp-Session-Id header is required")
        record = await self._sessions.load(session_id, principal=request.state.principal)
        if pool is not None and pool != record.pool:
            raise errors.SessionNotFound("Session not found")
        return record

    async def _post(self, request: Request, pool: str | None, version: str) -> Response:
        protocol.check_post_headers(request.headers.get("content-type"), request.headers.get("accept"))
        raw = await read_body(request, self._max_body)
        body = protocol.parse_body(raw, version, max_batch=self._max_batch)
        try:
            if body.initialize is not None:
                return await self._initialize(request, pool, body)
            if body.requests:
                self._counted.inc(len(body.requests))
                return await self._claimed(request, pool, body)
            record = await self._session(request, pool)
            for message in body.messages:
                if message.is_response:
                    await self._answers.put(record.id, message.raw)  # an answer to an input request
                elif message.method == CANCELLED:
                    await self._cancel(record, message.raw.get("params"))
            # transports §Sending Messages: only notifications/responses -> 202 Accepted
            return Response(status_code=202, headers={"Mcp-Session-Id": record.id})
        except errors.GatewayError as exc:
            return error_response(exc, body.first_id)

    async def _initialize(self, request: Request, pool_name: str | None, body: Body) -> Response:
        init = body.initialize
        assert init is not None
        if body.is_batch:
            # 2025-03-26 lifecycle §Initialization: initialize MUST NOT be part of a batch
            raise errors.InvalidRequest("Invalid Request: initialize must not be batched")
        params = init.raw.get("params")
        params = params if isinstance(params, dict) else {}
        pool = self._pools.get(pool_name)
        headers = self._base_headers(request, pool.name)
        instance, answer = await discover(self._caller, self._pools, pool.name, headers, params, init.id)
        if not isinstance(answer.get("result"), dict):
            return Response(json.dumps(translate.to_2025(answer, init.id)), media_type=protocol.JSON)
        offered = params.get("protocolVersion")
        version = translate.negotiate(offered if isinstance(offered, str) else None)
        session_id = protocol.new_session_id()
        await self._limiter.admit_session(request.state.client_key, session_id)
        record = new_record(
            session_id,
            pool=pool.name,
            instance=instance,
            upstream_sid="",  # a 2026-07-28 upstream has no sessions
            protocol=version,
            principal=request.state.principal,
            init_params=params,
        )
        await self._sessions.create(record)
        self._metrics.sessions_created.inc()
        self._counted.inc()
        result = translate.initialize_result(answer["result"], version)
        payload = {"jsonrpc": "2.0", "id": init.id, "result": result}
        return Response(json.dumps(payload), media_type=protocol.JSON, headers={"Mcp-Session-Id": session_id})

    async def _cancel(self, record: SessionRecord, params: Any) -> None:
        """2025 utilities/cancellation: the request's claim names its stream, whose running call
        closes its upstream request (2026-07-28 cancellation) at its next look."""
        request_id = params.get("requestId") if isinstance(params, dict) else None
        if request_id is None:
            return
        claim = await self._claims.get(record.id, request_id)
        if claim is not None and not claim.status:
            await self._answers.cancel(record.id, claim.stream, request_id)

    async def _claimed(self, request: Request, pool: str | None, body: Body) -> Response:
        """Claim the request ids first, as the relayed path does: a repeat (a load balancer's retry)
        is answered from the first copy, never run twice."""
        session_id = request.headers.get(H_SESSION)
        if not session_id:
            # transports §Session Management: requests after initialize without the id -> 400
            raise errors.MissingSession("Bad Request: Mcp-Session-Id header is required")
        digest = body_hash(body)
        claim = Claim(body_hash=digest, stream=cursor.new_stream_id(), replica=self._replica, at=time.time())
        ids = body.request_ids
        record, taken = await self._claims.load_and_claim(session_id, request.state.principal, pool, ids, claim)
        if taken is not None:
            self._metrics.replays.inc()
            first = await self._replays.resolve(record, body, digest, taken)
            if isinstance(first, Recorded):
                return Response(first.body, status_code=first.status, media_type=protocol.JSON, headers=_sid(record))
            return sse_response(self._relay.deliver(record, first.stream, 0), _sid(record))
        for message in body.messages:
            if message.is_response:
                await self._answers.put(record.id, message.raw)  # an answer to an input request
        outcome = Outcome(self._claims, record.id, ids, claim, self._idempotency)
        try:
            return await self._requests(request, record, body, claim.stream, outcome)
        except errors.UpstreamUnavailable:
            await outcome.not_sent()  # never reached the upstream: a retry may run it
            raise
        except errors.GatewayError as exc:
            await outcome.failed(exc)
            raise

    async def _requests(
        self, request: Request, record: SessionRecord, body: Body, stream: str, outcome: Outcome
    ) -> Response:
        init: dict[str, Any] = json.loads(record.init_params)
        instance = record.instance if self._pools.is_healthy(record.instance) else self._pools.pick(record.pool)
        call = Call(
            session=record.id,
            pool=record.pool,
            instance=instance,
            headers=self._base_headers(request, record.pool),
            init=init,
            stream=stream,
            input_timeout=self._input_timeout,
            log_level=await self._subscriptions.log_level(record.id),
        )
        first: Reply | None = None
        if not body.is_batch:
            only: Message = body.requests[0]
            own = await self._subscriptions.answer(record.id, only.raw)
            if own is not None:
                return await outcome.deliver(Response(json.dumps(own), media_type=protocol.JSON, headers=_sid(record)))
            sent = translate.upstream_message(only.raw, init, only.id, call.log_level)
            first = await self._caller.send(call.pool, instance, call.headers, sent, init)
            if first.message is not None and not translate.is_input_required(first.message):
                answer = json.dumps(translate.to_2025(first.message, only.id))
                return await outcome.deliver(Response(answer, media_type=protocol.JSON, headers=_sid(record)))
        rounds = Rounds(self._caller, self._answers, call, self._max_line, self._subscriptions.answer)
        response = BridgedStream(rounds.events(body.requests, first), rounds.close)
        stream, opened = await self._relay.open_stream(
            record, response, kind="post", pending=body.request_ids, stream=call.stream
        )
        delivery = self._relay.deliver(record, stream, 0, opened=opened)
        return sse_response(delivery, {"mcp-session-id": record.id})

    async def _listen(self, request: Request, pool: str | None) -> Response:
        """transports §Listening for Messages: the standalone stream, from an upstream listen stream;
        logged and resumable like any other (kind "get": it never carries responses)."""
        protocol.check_get_accept(request.headers.get("accept"))
        record = await self._session(request, pool)
        instance = record.instance if self._pools.is_healthy(record.instance) else self._pools.pick(record.pool)
        call = {
            "pool": record.pool,
            "instance": instance,
            "headers": self._base_headers(request, record.pool),
            "init": json.loads(record.init_params),
        }
        first = await open_listen(self._caller, self._subscriptions, record.id, call, self._max_line)
        if first is None:
            # transports §Listening for Messages: a server without a stream for the client answers 405
            raise errors.MethodNotAllowed("Method Not Allowed: the upstream refused subscriptions/listen")
        holder: list[UpstreamResponse] = [first.listen.response]
        events = listen(
            self._caller,
            self._subscriptions,
            first,
            session=record.id,
            call=call,
            check=self._listen_check,
            max_line=self._max_line,
            holder=holder,
        )
        response = BridgedStream(events, functools.partial(_close_all, holder))
        stream, opened = await self._relay.open_stream(record, response, kind="get", pending=())
        delivery = self._relay.deliver(record, stream, 0, opened=opened)
        return sse_response(delivery, {"mcp-session-id": record.id})

    async def _delete(self, request: Request, pool: str | None) -> Response:
        """transports §Session Management: the session is the gateway's alone; nothing upstream."""
        record = await self._session(request, pool)
        await self._sessions.delete(record.id)
        await self._limiter.release("sessions", request.state.client_key, record.id)
        self._metrics.sessions_deleted.inc()
        return Response(status_code=200)


def _close_all(responses: list[UpstreamResponse]) -> None:
    for response in responses:
        response.close()


def _sid(record: SessionRecord) -> dict[str, str]:
    return {"Mcp-Session-Id": record.id}
