"""A small in-memory `EventStore` for the SDK's streamable HTTP server (resumability tests).

Event ids come from one process-wide monotonic counter (decimal strings), so ids sort in
storage order and never repeat across stores. `replay_events_after` replays only the events of
the stream the given id belongs to, strictly after it, skipping priming rows (message None).

The SDK's stream id is just the JSON-RPC request id, and the session manager hands ONE store to
every session, so two sessions using request id 2 would share stream "2". sdk_server therefore
gives each session its own store (`per_session_event_stores`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import JSONRPCMessage

_ids = itertools.count(1)


@dataclass
class _Event:
    seq: int
    stream_id: StreamId
    message: JSONRPCMessage | None


@dataclass
class InMemoryEventStore(EventStore):
    max_events_per_stream: int = 10_000
    _streams: dict[StreamId, list[_Event]] = field(default_factory=dict)
    _index: dict[EventId, _Event] = field(default_factory=dict)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event = _Event(next(_ids), stream_id, message)
        events = self._streams.setdefault(stream_id, [])
        events.append(event)
        self._index[str(event.seq)] = event
        if len(events) > self.max_events_per_stream:
            dropped = events.pop(0)
            self._index.pop(str(dropped.seq), None)
        return str(event.seq)

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        anchor = self._index.get(last_event_id)
        if anchor is None:
            return None
        for event in list(self._streams.get(anchor.stream_id, ())):
            if event.seq > anchor.seq and event.message is not None:
                await send_callback(EventMessage(event.message, str(event.seq)))
        return anchor.stream_id


def per_session_event_stores(manager: StreamableHTTPSessionManager) -> None:
    """Make `manager` give every new session a fresh InMemoryEventStore.

    The manager reads its public `event_store` attribute once per session it admits; a property
    on a subclass (which wins over the instance attribute) returns a new store on each read.
    """
    if manager.event_store is None:
        return
    manager.__class__ = _PerSessionStoreManager


class _PerSessionStoreManager(StreamableHTTPSessionManager):
    @property
    def event_store(self) -> EventStore:
        return InMemoryEventStore()

    @event_store.setter
    def event_store(self, value: EventStore | None) -> None:
        pass
