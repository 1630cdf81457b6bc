"""GET on a virtual session: its notification stream (new), or a resume of any of its streams.

A call's stream is resumed on its member's upstream session (the stream id names the member); the
notification stream is the session's own (`listening.py`), listened to afresh once it has ended.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.responses import StreamSlot, iterate, sse_response
from gateway.metrics import Metrics
from gateway.store.eventlog import EventLog
from gateway.store.sessions import SessionStore
from gateway.streams.relay import Relay
from gateway.virtual.listening import Listener
from gateway.virtual.naming import NOTIFICATIONS, VirtualServer, member_of_stream, notification_stream_id
from gateway.virtual.record import VirtualSession
from gateway.wire import cursor
from gateway.wire.protocol import H_SESSION


class Gets:
    def __init__(
        self, *, listener: Listener, relay: Relay, log_: EventLog, store: SessionStore, metrics: Metrics
    ) -> None:
        self._listener = listener
        self._relay = relay
        self._log = log_
        self._store = store
        self._metrics = metrics

    async def listen(self, request: Request, server: VirtualServer, vs: VirtualSession, slot: StreamSlot) -> Response:
        """transports §Listening for Messages: the members' notifications, merged (`listening.py`)."""
        merged = self._listener.open(server, vs.record, request.headers)
        stream, opened = await self._relay.open_stream(
            vs.record, merged, kind="get", pending=(), stream=notification_stream_id(cursor.new_stream_id())
        )
        return sse_response(self._relay.deliver(vs.record, stream, 0, opened=opened), {H_SESSION: vs.record.id}, slot)

    async def resume(
        self,
        request: Request,
        server: VirtualServer,
        vs: VirtualSession,
        position: cursor.Cursor,
        slot: StreamSlot,
    ) -> Response:
        """transports §Resumability: replay after Last-Event-ID, on the same stream only; a call's
        stream is re-opened on its member's session, the notification stream is the session's."""
        pool = member_of_stream(server, position.stream)
        listening = position.stream.startswith(NOTIFICATIONS)
        meta = await self._log.meta(vs.record.id, position.stream)
        if (pool is None and not listening) or (
            meta is None and await self._store.stream_info(vs.record.id, position.stream) is None
        ):
            raise errors.StreamNotFound("Stream not found for this session")
        if listening and meta is not None and meta.done and position.seq >= meta.seq - 1:
            return await self.listen(request, server, vs, slot)  # it ended and the client has it all
        session = vs.members[pool].session(vs.record) if pool is not None else vs.record
        first = await self._log.first_seq(vs.record.id, position.stream)
        decision = cursor.decide(position.seq, meta_seq=meta.seq if meta else None, first_retained=first)
        self._metrics.resumes.inc()
        headers = {H_SESSION: vs.record.id}
        if isinstance(decision, cursor.Gap):
            events = await self._relay.gap_events(session, position.stream, decision.reason)
            return sse_response(iterate(events), headers, slot)
        trace = meta.trace if meta is not None else ""
        delivery = self._relay.deliver(session, position.stream, decision.after, resumed=True, trace=trace)
        return sse_response(delivery, headers, slot)
