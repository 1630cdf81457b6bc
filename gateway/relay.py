"""Delivery: Redis -> client, and the owner of every pump on this replica.

A delivery replays a stream's entries after a cursor in batches, then tails it: through the
local pump's signal when this replica pumps, otherwise with XREAD BLOCK, taking the pump
over when the lease holder's lease expired (it died). Each entry goes out as an SSE event
whose id is `S.N`, flushed as it is read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway import cursor, sse
from gateway.eventlog import END, Entry, EventLog, StreamVanished
from gateway.metrics import Metrics
from gateway.pump import Pump, PumpConfig, error_message
from gateway.sessions import SessionRecord, SessionStore
from gateway.signals import Signal, Signals
from gateway.tasks import Supervisor
from gateway.upstreams import UpstreamClient, UpstreamResponse

log = logging.getLogger("gateway.relay")


@dataclass(frozen=True)
class RelayConfig:
    keepalive: float
    retry_ms: int
    pump: PumpConfig


class Relay:
    def __init__(self, *, log_: EventLog, sessions: SessionStore, upstream: UpstreamClient,
                 supervisor: Supervisor, config: RelayConfig, replica: str, metrics: Metrics) -> None:
        self._log = log_
        self._sessions = sessions
        self._upstream = upstream
        self._supervisor = supervisor
        self._config = config
        self._replica = replica
        self._metrics = metrics
        self.signals = Signals()
        self.draining = asyncio.Event()

    # --- pumps ------------------------------------------------------------------------------

    async def open_stream(self, record: SessionRecord, response: UpstreamResponse, *, kind: str,
                          pending: tuple[Any, ...]) -> str:
        """Register a new stream for an upstream SSE response and start pumping it."""
        stream = cursor.new_stream_id()
        try:
            await self._sessions.register_stream(record.id, stream, kind, pending)
            await self._log.create(record.id, stream, kind=kind, pending=pending, owner=self._replica)
        except BaseException:
            response.close()
            raise
        self._start_pump(record, stream, kind, list(pending), uid="", first=response)
        return stream

    def _start_pump(self, record: SessionRecord, stream: str, kind: str, pending: list[Any], *,
                    uid: str, first: UpstreamResponse | None) -> Signal:
        signal = self.signals.open(record.id, stream)
        pump = Pump(log=self._log, upstream=self._upstream, config=self._config.pump, record=record,
                    stream=stream, kind=kind, pending=pending, owner=self._replica, signal=signal, uid=uid)
        self._supervisor.spawn(self._run_pump(pump, first), name=f"pump:{stream}")
        return signal

    async def _run_pump(self, pump: Pump, first: UpstreamResponse | None) -> None:
        self._metrics.active_pumps.inc()
        try:
            await pump.run(first)
        finally:
            self._metrics.active_pumps.dec()
            self.signals.drop(pump.record.id, pump.stream, pump.signal)

    async def _take_over(self, record: SessionRecord, stream: str) -> Signal | None:
        """Become the pump of a stream whose pump died (its lease expired)."""
        if self.draining.is_set() or not await self._log.acquire(record.id, stream, self._replica):
            return None
        meta = await self._log.meta(record.id, stream)
        if meta is None:
            raise StreamVanished(stream)
        log.info("stream %s: lease expired, taking the pump over (upstream cursor %r)", stream, meta.uid)
        self._metrics.takeovers.inc()
        return self._start_pump(record, stream, meta.kind, list(meta.pending), uid=meta.uid, first=None)

    # --- delivery ---------------------------------------------------------------------------

    async def gap_events(self, record: SessionRecord, stream: str, reason: str) -> list[bytes]:
        """JSON-RPC errors for every request still pending on a stream that has a gap."""
        meta = await self._log.meta(record.id, stream)
        if meta is not None:
            pending: tuple[Any, ...] = meta.pending
        else:
            info = await self._sessions.stream_info(record.id, stream)
            pending = info.pending if info is not None else ()
        self._metrics.gaps.inc()
        log.warning("stream %s: gap (%s); failing %d pending request(s)", stream, reason, len(pending))
        return [sse.encode(error_message(i, f"Events of this stream were lost: {reason}")) for i in pending]

    async def deliver(self, record: SessionRecord, stream: str, after: int, *,
                      prime: bool) -> AsyncIterator[bytes]:
        """The SSE body for one client connection on `stream`, starting after seq `after`."""
        if prime:
            # 2025-11-25 transports §Resumability: priming event (an id, empty data) and retry.
            yield sse.encode(None, id=cursor.event_id(stream, after), retry=self._config.retry_ms)
        last_write = time.monotonic()
        while True:
            if self.draining.is_set():
                # Graceful drain: end the connection; the client resumes on another replica.
                yield sse.retry_hint(self._config.retry_ms)
                return
            entries, failure = await self._next(record, stream, after, last_write)
            if failure is not None:
                for event in failure:
                    yield event
                return
            for entry in entries:
                if entry.type == END:
                    return
                yield sse.encode(entry.data, id=cursor.event_id(stream, entry.seq))
                self._metrics.events_relayed.inc()
                after = entry.seq
            now = time.monotonic()
            if entries:
                last_write = now
            elif now - last_write >= self._config.keepalive:
                yield sse.KEEPALIVE  # transports: keep idle streams alive through proxies
                last_write = now

    async def _next(self, record: SessionRecord, stream: str, after: int,
                    last_write: float) -> tuple[list[Entry], list[bytes] | None]:
        """The next entries after `after` (maybe none, on a keep-alive tick) or final events."""
        entries = await self._log.read(record.id, stream, after)
        if entries:
            return entries, None
        budget = max(0.05, self._config.keepalive - (time.monotonic() - last_write))
        signal = self.signals.get(record.id, stream)
        if signal is not None:
            if signal.failure is not None:
                return [], signal.failure
            await signal.wait(after, budget)
            return await self._log.read(record.id, stream, after), None
        entries = await self._log.wait(record.id, stream, after, min(budget, self._config.pump.lease_ttl))
        if entries:
            return entries, None
        # Nothing new: is anyone still pumping this stream?
        try:
            holder = await self._log.lease_holder(record.id, stream)
            if holder is None:
                meta = await self._log.meta(record.id, stream)
                if meta is None:
                    raise StreamVanished(stream)
                if not meta.done:
                    await self._take_over(record, stream)
        except StreamVanished:
            return [], await self.gap_events(record, stream, "the stream's state vanished from the store")
        return [], None
