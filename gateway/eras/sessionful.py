"""The sessionful MCP endpoint (2025-03-26, 2025-06-18, 2025-11-25).

Each request is a short sequence: check headers -> parse -> find session -> forward to the
session's upstream instance -> relay (JSON as is; SSE through a resumable stream).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors, logs
from gateway.asgi.responses import (
    SSE_HEADERS,
    RelayedResponse,
    StreamSlot,
    client_headers,
    error_response,
    iterate,
    read_body,
    sse_response,
    with_cookies,
)
from gateway.metrics import Metrics
from gateway.policy.governor import Governor, filtered_list
from gateway.replay.idempotent import Idempotency
from gateway.replay.outcomes import Outcome
from gateway.replay.replays import Recorded, Replays, body_hash
from gateway.store.claims import Claim, Claims
from gateway.store.eventlog import EventLog
from gateway.store.idempotency import IdempotencyRecord
from gateway.store.limits import Limiter
from gateway.store.sessions import SessionRecord, SessionStore, new_record
from gateway.streams.relay import Relay
from gateway.upstream.affinity import Affinity
from gateway.upstream.client import HeaderPolicy, UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.wire import answers, belonging, cursor, protocol, sse
from gateway.wire.protocol import H_LAST_EVENT_ID, H_SESSION, Body

log = logging.getLogger("gateway.eras.sessionful")


class SessionfulEndpoint:
    def __init__(
        self,
        *,
        pools: Pools,
        sessions: SessionStore,
        log_: EventLog,
        relay: Relay,
        upstream: UpstreamClient,
        affinity: Affinity,
        metrics: Metrics,
        headers: HeaderPolicy,
        limiter: Limiter,
        max_body: int,
        max_batch: int,
        claims: Claims,
        replays: Replays,
        idempotency: Idempotency,
        replica: str,
        policy: Governor | None = None,
    ) -> None:
        self._policy = policy
        self._idempotency = idempotency
        self._claims = claims
        self._replays = replays
        self._replica = replica
        self._slots = itertools.count()
        self._headers = headers
        self._limiter = limiter
        self._max_batch = max_batch
        self._pools = pools
        self._affinity = affinity
        self._sessions = sessions
        self._log = log_
        self._relay = relay
        self._upstream = upstream
        self._metrics = metrics
        self._max_body = max_body

    def _upstream_headers(self, request: Request, pool: str, record: SessionRecord | None) -> dict[str, str]:
        headers = self._headers.build(request.headers.items(), pool)
        if record is not None and record.upstream_sid:
            headers["Mcp-Session-Id"] = record.upstream_sid
        return headers

    async def _stream_slot(self, request: Request) -> StreamSlot:
        """Admit one more open stream for this client (429 past the cap) before any upstream work."""
        # The member only tells this stream from the client's others: the replica and a count, not
        # a random token (a system call per request).
        slot = StreamSlot(self._limiter, request.state.client_key, f"{self._replica}#{next(self._slots)}")
        if slot.capped:
            await self._limiter.admit_stream(slot.who, slot.member)
        return slot

    async def _session(self, request: Request, pool: str | None) -> SessionRecord:
        session_id = request.headers.get(H_SESSION)
        if not session_id:
            # transports §Session Management: requests after initialize without the id -> 400
            raise errors.MissingSession("Bad Request: Mcp-Session-Id header is required")
        record = await self._sessions.load(session_id, principal=request.state.principal)
        if pool is not None and pool != record.pool:
            raise errors.SessionNotFound("Session not found")
        return record

    async def _relay_plain(self, response: UpstreamResponse, session_id: str | None) -> Response:
        return RelayedResponse(await response.read(self._max_body), response.status, response.headers, session_id)

    async def _upstream_lost_session(self, record: SessionRecord, response: UpstreamResponse) -> None:
        if response.status == 404 and record.upstream_sid:
            # The upstream forgot its session (restart): ours is dead too, the client re-initializes.
            response.close()
            await self._sessions.delete(record.id)
            raise errors.SessionNotFound("Session not found (the upstream ended it)")

    # --- POST -----------------------------------------------------------------------------------

    async def post(self, request: Request, pool: str | None, version: str) -> Response:
        protocol.check_post_headers(request.headers.get("content-type"), request.headers.get("accept"))
        raw = await read_body(request, self._max_body)
        body = protocol.parse_body(raw, version, max_batch=self._max_batch)
        if body.first_id is not None:
            logs.request_var.set(str(body.first_id))
        try:
            if self._policy is not None:  # decided before any upstream work
                await self._policy.check_all(request, self._pools.get(pool).name, body.requests)
            if body.initialize is not None:
                return await self._initialize(request, pool, body, raw)
            if not body.requests:
                record = await self._session(request, pool)
                record, response = await self._affinity.send(
                    record, "POST", self._upstream_headers(request, record.pool, None), raw
                )
                await self._upstream_lost_session(record, response)
                return await self._relay_post(record, body, response, None, None)
            slot = await self._stream_slot(request)
            try:
                return await self._post_requests(request, pool, body, raw, slot)
            except BaseException:
                await slot.release()
                raise
        except errors.GatewayError as exc:
            return error_response(exc, body.first_id)

    async def _post_requests(
        self, request: Request, pool: str | None, body: Body, raw: bytes, slot: StreamSlot
    ) -> Response:
        """Claim the request ids (a replay is answered from the first copy), then forward."""
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
            return await self._answer_replay(record, body, digest, taken, slot)
        outcome = Outcome(self._claims, record.id, ids, claim, self._idempotency)
        try:
            opened = await self._idempotency.open(request, raw)
        except errors.GatewayError:
            await outcome.not_sent()
            raise
        if isinstance(opened, IdempotencyRecord):
            await outcome.not_sent()  # answered from the Idempotency-Key record: this copy runs nothing
            return await self._answer_stored(record, opened, slot)
        if opened is not None:
            outcome = dataclasses.replace(outcome, ticket=opened)
        headers = self._upstream_headers(request, record.pool, None)
        try:
            record, response = await self._affinity.send(record, "POST", headers, raw)
        except (errors.UpstreamUnavailable, errors.UpstreamBusy):
            await outcome.not_sent()  # never reached the upstream: a retry may run it
            raise
        except errors.GatewayError as exc:
            await outcome.failed(exc)
            raise
        await self._upstream_lost_session(record, response)
        try:
            listed = None if body.is_batch else await filtered_list(request, response, body.first_id, self._max_body)
            if listed is not None:  # a list the policy filters: one JSON answer
                await slot.release()
                return await outcome.deliver(RelayedResponse(listed, 200, {"content-type": protocol.JSON}, record.id))
            return await self._relay_post(record, body, response, slot, outcome)
        except errors.GatewayError as exc:
            await outcome.failed(exc)
            raise

    async def _answer_replay(
        self, record: SessionRecord, body: Body, digest: str, taken: Claim, slot: StreamSlot
    ) -> Response:
        outcome = await self._replays.resolve(record, body, digest, taken)
        if isinstance(outcome, Recorded):
            await slot.release()
            headers = {"Mcp-Session-Id": record.id}
            return Response(outcome.body, status_code=outcome.status, media_type=protocol.JSON, headers=headers)
        delivery = self._relay.deliver(record, outcome.stream, 0)
        return sse_response(delivery, {"mcp-session-id": record.id}, slot)

    async def _answer_stored(self, record: SessionRecord, stored: IdempotencyRecord, slot: StreamSlot) -> Response:
        """The stored response of an Idempotency-Key; a stream is replayed to its own session only."""
        if not stored.stream:
            await slot.release()
            return self._idempotency.stored_response(stored, {"Mcp-Session-Id": record.id})
        if stored.session != record.id:
            # DESIGN guarantee 3: never replay an event to another session.
            raise errors.RequestIdReused("Conflict: this Idempotency-Key was answered on another session's stream")
        delivery = self._relay.deliver(record, stored.stream, 0)
        return sse_response(delivery, {"mcp-session-id": record.id}, slot)

    async def _relay_post(
        self,
        record: SessionRecord,
        body: Body,
        response: UpstreamResponse,
        slot: StreamSlot | None,
        outcome: Outcome | None,
    ) -> Response:
        if not body.requests:
            # transports §Sending Messages: only notifications/responses -> 202 Accepted, no body
            if 200 <= response.status < 300:
                response.close()
                return Response(status_code=202, headers={"Mcp-Session-Id": record.id})
            return await self._relay_plain(response, record.id)
        if response.status == 200 and not response.is_sse and response.content_type != protocol.JSON:
            response.close()
            raise errors.UpstreamError(f"Bad upstream answer: unexpected content type {response.content_type!r}")
        if response.status != 200 or not response.is_sse or slot is None or outcome is None:
            if slot is not None:
                await slot.release()
            answer = await self._relay_plain(response, record.id)
            return answer if outcome is None else await outcome.deliver(answer)
        to_client = client_headers(response.headers, record.id)  # before the pump forgets them
        tokens = belonging.progress_tokens(m.raw for m in body.requests)
        stream, opened = await self._relay.open_stream(
            record, response, kind="post", pending=body.request_ids, stream=outcome.claim.stream, tokens=tokens
        )
        await outcome.streamed(stream)
        delivery = self._relay.deliver(record, stream, 0, opened=opened)
        return sse_response(delivery, to_client, slot)

    async def _initialize(self, request: Request, pool_name: str | None, body: Body, raw: bytes) -> Response:
        if body.is_batch:
            # 2025-03-26 lifecycle §Initialization: initialize MUST NOT be part of a batch
            raise errors.InvalidRequest("Invalid Request: initialize must not be batched")
        pool = self._pools.get(pool_name)
        # The per-client session cap is checked before any upstream work: a refused session must
        # not cost the upstream an initialize (issue 35).
        session_id = protocol.new_session_id()
        await self._limiter.admit_session(request.state.client_key, session_id)
        try:
            return await self._initialize_upstream(request, pool.name, body, raw, session_id)
        except BaseException:
            await self._limiter.release("sessions", request.state.client_key, session_id)
            raise

    async def _initialize_upstream(
        self, request: Request, pool_name: str, body: Body, raw: bytes, session_id: str
    ) -> Response:
        """Forward an admitted initialize; a session is created only when the upstream accepted."""
        headers = self._upstream_headers(request, pool_name, None)
        tried: set[str] = set()
        while True:
            # Retrying initialize elsewhere is safe: no upstream session exists yet (DESIGN "Upstreams").
            instance = self._pools.pick(pool_name, avoid=frozenset(tried))
            try:
                response = await self._upstream.send("POST", instance, headers, raw)
                break
            except errors.UpstreamUnavailable:
                self._pools.report_failure(instance)
                tried.add(instance)
        if response.status != 200:
            await self._limiter.release("sessions", request.state.client_key, session_id)
            return await self._relay_plain(response, None)
        upstream_sid = response.headers.get(H_SESSION, "")
        payload = await response.read(self._max_body)
        answer, events = answers.initialize_answer(payload, response.is_sse, body.first_id)
        if answer is None or "result" not in answer:
            await self._limiter.release("sessions", request.state.client_key, session_id)
            return RelayedResponse(payload, 200, response.headers, None)
        init = body.initialize
        params = init.raw.get("params") if init is not None else None
        record = new_record(
            session_id,
            pool=pool_name,
            instance=instance,
            upstream_sid=upstream_sid,
            protocol=protocol.negotiated_version(answer, protocol.initialize_version(body)),
            principal=request.state.principal,
            init_params=params,
        )
        await self._sessions.create(record)
        self._metrics.sessions_created.inc()
        headers = client_headers(response.headers, record.id)
        if response.is_sse:
            # Upstream event ids must not reach the client: initialize is not resumable anyway.
            relayed = Response(
                b"".join(sse.encode(e) for e in events),
                status_code=200,
                media_type=protocol.SSE,
                headers={**headers, **SSE_HEADERS},
            )
            return with_cookies(relayed, headers)
        return with_cookies(Response(payload, status_code=200, headers=headers), headers)

    # --- GET ------------------------------------------------------------------------------------

    async def get(self, request: Request, pool: str | None, version: str) -> Response:
        protocol.check_get_accept(request.headers.get("accept"))
        record = await self._session(request, pool)
        last_event_id = request.headers.get(H_LAST_EVENT_ID)
        position = cursor.parse_event_id(last_event_id) if last_event_id is not None else None
        slot = await self._stream_slot(request)
        try:
            if position is not None:
                return await self._resume(request, record, position, slot)
            return await self._listen(request, record, slot)
        except BaseException:
            await slot.release()
            raise

    async def _listen(self, request: Request, record: SessionRecord, slot: StreamSlot) -> Response:
        """A new standalone stream: the upstream's GET, pumped (transports §Listening for Messages).
        The caller releases `slot` if this raises."""
        headers = self._upstream_headers(request, record.pool, None)
        record, response = await self._affinity.send(record, "GET", headers, None)
        await self._upstream_lost_session(record, response)
        if response.status != 200 or not response.is_sse:
            await slot.release()
            return await self._relay_plain(response, record.id)  # e.g. 405: no standalone stream
        to_client = client_headers(response.headers, record.id)  # before the pump forgets them
        stream, opened = await self._relay.open_stream(record, response, kind="get", pending=())
        delivery = self._relay.deliver(record, stream, 0, opened=opened)
        return sse_response(delivery, to_client, slot)

    async def _resume(
        self, request: Request, record: SessionRecord, position: cursor.Cursor, slot: StreamSlot
    ) -> Response:
        """transports §Resumability: replay after Last-Event-ID, on the same stream only."""
        meta = await self._log.meta(record.id, position.stream)
        if meta is None and await self._sessions.stream_info(record.id, position.stream) is None:
            raise errors.StreamNotFound("Stream not found for this session")
        if meta is not None and meta.kind == "get" and meta.done and position.seq >= meta.seq - 1:
            # The standalone stream ended (its upstream closed it with no event id to resume from)
            # and this client has all of it: listen afresh, not an empty stream it would resume
            # again and again (transports §Listening for Messages: the client may GET at any time).
            return await self._listen(request, record, slot)
        first = await self._log.first_seq(record.id, position.stream)
        decision = cursor.decide(position.seq, meta_seq=meta.seq if meta else None, first_retained=first)
        self._metrics.resumes.inc()
        headers = {"Mcp-Session-Id": record.id}
        if isinstance(decision, cursor.Gap):
            events = await self._relay.gap_events(record, position.stream, decision.reason)
            return sse_response(iterate(events), headers, slot)
        trace = meta.trace if meta is not None else ""
        delivery = self._relay.deliver(record, position.stream, decision.after, resumed=True, trace=trace)
        return sse_response(delivery, headers, slot)

    # --- DELETE ---------------------------------------------------------------------------------

    async def delete(self, request: Request, pool: str | None) -> Response:
        record = await self._session(request, pool)
        response = None
        if self._pools.is_healthy(record.instance):
            with contextlib.suppress(errors.UpstreamError):
                headers = self._upstream_headers(request, record.pool, record)
                response = await self._upstream.send("DELETE", record.instance, headers)
        if response is not None and response.status == 405:
            # transports §Session Management: the server may refuse client-initiated termination.
            return await self._relay_plain(response, record.id)
        if response is not None:
            response.close()
        await self._sessions.delete(record.id)
        await self._limiter.release("sessions", request.state.client_key, record.id)
        self._metrics.sessions_deleted.inc()
        return Response(status_code=200)
