"""A routed request of a virtual session sent to its member, with the pool paths' replay protection:
its request id is claimed first (with the member's stream id already named), so a repeat (a load
balancer's retry, a client's) is answered from the first copy on any replica, never run twice; an
`Idempotency-Key` likewise. A member's SSE answer is relayed through the event log.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.responses import RelayedResponse, StreamSlot, client_headers, sse_response
from gateway.metrics import Metrics
from gateway.replay.idempotent import Idempotency
from gateway.replay.outcomes import Outcome
from gateway.replay.replays import Recorded, Replays, body_hash
from gateway.store.claims import Claim, Claims
from gateway.store.idempotency import IdempotencyRecord
from gateway.store.limits import Limiter
from gateway.store.sessions import SessionRecord
from gateway.streams.relay import Relay
from gateway.upstream.client import UpstreamResponse
from gateway.virtual.calls import Routed
from gateway.virtual.members import Members, MemberUnavailable
from gateway.virtual.naming import VirtualServer, member_of_stream, member_stream_id
from gateway.virtual.record import VirtualSession
from gateway.wire import belonging, cursor, protocol
from gateway.wire.protocol import H_SESSION, Body


class Forwarder:
    def __init__(
        self,
        *,
        members: Members,
        relay: Relay,
        claims: Claims,
        replays: Replays,
        idempotency: Idempotency,
        limiter: Limiter,
        metrics: Metrics,
        max_body: int,
        replica: str,
    ) -> None:
        self._members = members
        self._relay = relay
        self._claims = claims
        self._replays = replays
        self._idempotency = idempotency
        self._limiter = limiter
        self._metrics = metrics
        self._max_body = max_body
        self._replica = replica
        self._slots = itertools.count()

    async def forward(
        self, request: Request, server: VirtualServer, vs: VirtualSession, body: Body, raw: bytes, routed: Routed
    ) -> Response:
        digest = body_hash(body)
        stream = member_stream_id(server.members.index(routed.pool), cursor.new_stream_id())
        claim = Claim(body_hash=digest, stream=stream, replica=self._replica, at=time.time())
        ids = body.request_ids
        record, taken = await self._claims.load_and_claim(
            vs.record.id, request.state.principal, server.name, ids, claim
        )
        if taken is not None:
            self._metrics.replays.inc()
            return await self._replay(server, vs, body, digest, taken)
        outcome = Outcome(self._claims, record.id, ids, claim, self._idempotency)
        try:
            opened = await self._idempotency.open(request, raw)
        except errors.GatewayError:
            await outcome.not_sent()
            raise
        if isinstance(opened, IdempotencyRecord):
            await outcome.not_sent()  # answered from the Idempotency-Key record: this copy runs nothing
            return self._stored(server, vs, opened)
        if opened is not None:
            outcome = dataclasses.replace(outcome, ticket=opened)
        payload = json.dumps(routed.message).encode()
        try:
            member, response = await self._members.send(vs.record, vs.members[routed.pool], request.headers, payload)
        except (errors.UpstreamUnavailable, MemberUnavailable):
            await outcome.not_sent()  # never reached the member: a retry may run it
            raise
        except errors.GatewayError as exc:
            await outcome.failed(exc)
            raise
        try:
            return await self._relay_answer(request, member.session(vs.record), body, routed, response, outcome)
        except errors.GatewayError as exc:
            await outcome.failed(exc)
            raise

    async def _relay_answer(
        self,
        request: Request,
        session: SessionRecord,
        body: Body,
        routed: Routed,
        response: UpstreamResponse,
        outcome: Outcome,
    ) -> Response:
        if response.status != 200 or not response.is_sse:
            answer = RelayedResponse(await response.read(self._max_body), response.status, response.headers, session.id)
            return await outcome.deliver(answer)
        slot = StreamSlot(self._limiter, request.state.client_key, f"{self._replica}#{next(self._slots)}")
        try:
            if slot.capped:
                await self._limiter.admit_stream(slot.who, slot.member)
            to_client = client_headers(response.headers, session.id)  # before the pump forgets them
            stream, opened = await self._relay.open_stream(
                session,
                response,
                kind="post",
                pending=body.request_ids,
                stream=outcome.claim.stream,
                tokens=belonging.progress_tokens([routed.message]),  # a re-opened stream relays only their progress
            )
            await outcome.streamed(stream)
            return sse_response(self._relay.deliver(session, stream, 0, opened=opened), to_client, slot)
        except BaseException:
            response.close()
            await slot.release()
            raise

    def _stream_session(self, server: VirtualServer, vs: VirtualSession, stream: str) -> SessionRecord:
        pool = member_of_stream(server, stream)
        if pool is None:
            raise errors.StreamNotFound("Stream not found for this session")
        return vs.members[pool].session(vs.record)

    async def _replay(
        self, server: VirtualServer, vs: VirtualSession, body: Body, digest: str, taken: Claim
    ) -> Response:
        outcome = await self._replays.resolve(vs.record, body, digest, taken)
        if isinstance(outcome, Recorded):
            return Response(
                outcome.body, status_code=outcome.status, media_type=protocol.JSON, headers={H_SESSION: vs.record.id}
            )
        delivery = self._relay.deliver(self._stream_session(server, vs, outcome.stream), outcome.stream, 0)
        return sse_response(delivery, {"mcp-session-id": vs.record.id})

    def _stored(self, server: VirtualServer, vs: VirtualSession, stored: IdempotencyRecord) -> Response:
        """The stored response of an Idempotency-Key; a stream is replayed to its own session only."""
        if not stored.stream:
            return self._idempotency.stored_response(stored, {H_SESSION: vs.record.id})
        if stored.session != vs.record.id:
            # DESIGN guarantee 3: never replay an event to another session.
            raise errors.RequestIdReused("Conflict: this Idempotency-Key was answered on another session's stream")
        delivery = self._relay.deliver(self._stream_session(server, vs, stored.stream), stored.stream, 0)
        return sse_response(delivery, {"mcp-session-id": vs.record.id})
