"""Delivery: Redis -> client, and the owner of every pump on this replica.

A delivery replays a stream's entries after a cursor in batches, then tails it: through the local pump's
signal when this replica pumps, otherwise through the replica's multiplexed tail (streams.tail), which also
tells it when the pumping replica died so this one adopts the stream (a compare-and-set on the lease). Each
entry goes out as an SSE event whose id is `S.N`, flushed as it is read. On drain, deliveries end at once
(clients resume elsewhere) while pumps keep writing into Redis until their streams end or the drain deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway import errors, logs
from gateway.metrics import Metrics
from gateway.retry import store_busy
from gateway.store.eventlog import DONE, END, POLL, TAKEN, VANISHED, Entry, EventLog, Meta
from gateway.store.sessions import SessionRecord, SessionStore
from gateway.streams import spans
from gateway.streams.listeners import Listeners
from gateway.streams.opening import Opening
from gateway.streams.pump import Pump, PumpConfig
from gateway.streams.signals import Signal, Signals
from gateway.streams.tail import Tail, Watch
from gateway.supervisor import Supervisor
from gateway.timers import EXACT, Timers
from gateway.tracing import attributes as a
from gateway.tracing.api import NOOP, Attrs, Tracer
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.wire import cursor, sse
from gateway.wire.answers import answered_ids, error_message
from gateway.wire.protocol import PRIMING_VERSIONS

log = logging.getLogger("gateway.streams.relay")


@dataclass(frozen=True)
class RelayConfig:
    keepalive: float
    retry_ms: int
    pump: PumpConfig
    replay_limit: int = 10_000


class Relay:
    def __init__(
        self,
        *,
        log_: EventLog,
        sessions: SessionStore,
        upstream: UpstreamClient,
        supervisor: Supervisor,
        config: RelayConfig,
        replica: str,
        metrics: Metrics,
        tail: Tail,
        tracer: Tracer = NOOP,
        timers: Timers = EXACT,
    ) -> None:
        self._tracer = tracer
        self._log = log_
        self._sessions = sessions
        self._upstream = upstream
        self._supervisor = supervisor
        self._config = config
        self._replica = replica
        self._metrics = metrics
        self.signals = Signals(timers)
        self.draining = asyncio.Event()
        self.tail = tail  # the legacy SSE bridge listens through it too
        self._pumps: dict[tuple[str, str], tuple[Pump, asyncio.Task[None]]] = {}
        self._listeners = Listeners()
        tail.bind(self.adopt, lambda session, stream: (session, stream) in self._pumps)

    # --- pumps ------------------------------------------------------------------------------

    async def open_stream(
        self,
        record: SessionRecord,
        response: UpstreamResponse,
        *,
        kind: str,
        pending: tuple[Any, ...],
        stream: str | None = None,
        tokens: tuple[Any, ...] = (),
    ) -> tuple[str, Signal]:
        """Register a new stream for an upstream SSE response and start pumping it; returns once
        the stream is in the store (created by the pump's first write, with the events that came
        with the upstream's headers: one round trip), with the pump's signal for its first delivery
        (the pump may have written the whole stream and stopped already).

        `stream` is an id reserved earlier (a request-id claim names it before the upstream is called);
        `tokens`: its requests' progress tokens (a re-opened stream relays only their progress)."""
        stream = stream or cursor.new_stream_id()
        # The request's span: later spans of the stream (takeovers, resumes) join its trace.
        trace = self._tracer.traceparent()
        opening = Opening(trace, self._sessions.registration(kind, pending), asyncio.get_running_loop().create_future())
        try:  # the pump's span is the request's child, as the create's
            start = Meta(kind, 0, pending, "", False, tokens=tokens)
            signal = self._start_pump(record, stream, start, first=response, opening=opening)
        except BaseException:
            response.close()
            raise
        attrs = {a.DB_SYSTEM: "redis", a.DB_OPERATION: "EVALSHA", a.STREAM: stream}
        with self._tracer.span("redis create", kind="client", attrs=attrs):
            await opening.done
        return stream, signal

    def _start_pump(
        self,
        record: SessionRecord,
        stream: str,
        meta: Meta,
        *,
        first: UpstreamResponse | None,
        opening: Opening | None = None,
    ) -> Signal:
        """A pump for `stream`, from where its `meta` says it is (a new stream's: nothing yet)."""
        signal = self.signals.open(record.id, stream, meta.seq)
        pump = Pump(
            log=self._log,
            upstream=self._upstream,
            config=self._config.pump,
            record=record,
            stream=stream,
            kind=meta.kind,
            pending=list(meta.pending),
            owner=self._replica,
            signal=signal,
            uid=meta.uid,
            seq=meta.seq,
            tracer=self._tracer,
            opening=opening,
            detachment=self._listeners.detachment((record.id, stream), meta.kind, self._config.pump.abandon_after),
            tokens=meta.tokens,
            dropped=lambda reason: self._metrics.replay_dropped.labels(reason).inc(),
        )
        task = self._supervisor.spawn(self._run_pump(pump, first), name=f"pump:{stream}")
        self._pumps[(record.id, stream)] = (pump, task)
        if opening is not None:  # a pump cancelled before its first step runs none of its code
            task.add_done_callback(lambda _: opening.failed(errors.StoreError("the stream's pump stopped early")))
        return signal

    async def _run_pump(self, pump: Pump, first: UpstreamResponse | None) -> None:
        logs.session_var.set(logs.short(pump.record.id))
        logs.stream_var.set(pump.stream)
        self._metrics.active_pumps.inc()
        try:
            await pump.run(first)
        finally:
            self._metrics.active_pumps.dec()
            self.signals.drop(pump.record.id, pump.stream, pump.signal)
            if self._pumps.get((pump.record.id, pump.stream), (None,))[0] is pump:
                del self._pumps[(pump.record.id, pump.stream)]

    async def adopt(self, watch: Watch) -> None:
        """Become the pump of a watched stream whose holder is gone (dead, paused or released).

        The lease moves by compare-and-set against the holder seen dead, so of all replicas that
        noticed, exactly one wins; the old holder's appends are refused from then on (fencing).
        """
        record, stream = watch.record, watch.stream
        if record is None:
            return  # a plain channel: nothing to pump
        if (record.id, stream) in self._pumps:
            watch.holder = self._replica
        elif not self.draining.is_set():
            started = self._tracer.now_ns()
            outcome = await self._log.acquire(record.id, stream, self._replica, watch.holder)
            if outcome.code == TAKEN:
                meta = await self._log.meta(record.id, stream)
                if meta is None:
                    watch.vanished = True
                else:
                    log.info("stream %s: pump %s is gone, taking over (cursor %r)", stream, watch.holder, meta.uid)
                    self._metrics.takeovers.inc()
                    # The span (from before the compare-and-set) continues the trace of the request that
                    # opened the stream; the new pump (its task copies this context) nests under it.
                    attrs = {a.STREAM: stream, a.SESSION: a.session_prefix(record.id), a.HOLDER: watch.holder or ""}
                    parent = spans.stored(self._tracer, meta.trace)
                    with self._tracer.span("mcp.stream.takeover", attrs=attrs, parent=parent, start_ns=started or None):
                        self._start_pump(record, stream, meta, first=None)
                    watch.holder = self._replica
            elif outcome.code == DONE:
                watch.done = True
            elif outcome.code == VANISHED:
                watch.vanished = True
            else:
                watch.holder = outcome.holder or None
        watch.notify(watch.seq)  # deliveries look again: local signal, end, or gap

    def wake_all(self) -> None:
        """Wake every waiting delivery, local or tailing (graceful drain)."""
        self.signals.wake_all()
        self.tail.wake_all()

    async def finish_pumps(self, timeout: float) -> None:
        """Drain: keep pumping until every stream that answers requests has ended, or `timeout`.

        Standalone GET streams never end by themselves: they keep pumping while the answers
        finish, then are handed over with the rest. Each stopped pump releases its lease with a
        notification, and a replica tailing the stream adopts it at once.
        """
        answers = [task for pump, task in self._pumps.values() if pump.kind == "post"]
        if answers:
            log.info("draining: %d answer stream(s) keep pumping for up to %.1f s", len(answers), timeout)
            await asyncio.wait(answers, timeout=max(0.0, timeout))
        late = [task for _, task in self._pumps.values() if not task.done()]
        if late:
            log.info("draining: handing %d unfinished stream(s) over", len(late))
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def verify_leases(self) -> None:
        """Our liveness lapsed: stop every pump whose stream another replica took meanwhile."""
        for (session, stream), (pump, task) in list(self._pumps.items()):
            if pump.finished:
                continue
            holder = await self._log.lease_holder(session, stream)
            if holder is not None and holder != self._replica:  # None: it finished meanwhile
                log.warning("stream %s: taken over while this replica looked dead; stopping its pump", stream)
                pump.lost = True
                task.cancel()

    # --- delivery ---------------------------------------------------------------------------

    async def gap_events(self, record: SessionRecord, stream: str, reason: str) -> list[bytes]:
        """What a client resuming across a gap gets: one final answer per request of the stream.

        DESIGN "Gaps": never skip silently. A request whose response is still retained gets that
        response; every other request of the stream gets a JSON-RPC error naming the loss.
        """
        info = await self._sessions.stream_info(record.id, stream)
        if info is not None:
            requested: tuple[Any, ...] = info.pending
        else:
            meta = await self._log.meta(record.id, stream)
            requested = meta.pending if meta is not None else ()
        answered: dict[Any, Entry] = {}
        for entry in await self._log.newest(record.id, stream, self._config.replay_limit):
            for request_id in answered_ids(entry.data):
                answered.setdefault(request_id, entry)
        self._metrics.gaps.inc()
        lost = [i for i in requested if i not in answered]
        log.warning("stream %s: gap (%s); %d request(s) lost", stream, reason, len(lost))
        attrs: Attrs = {a.STREAM: stream, a.GAP_REASON: reason, a.LOST: len(lost)}
        self._tracer.start("mcp.stream.gap", attrs=attrs).end()
        kept = sorted({e.seq: e for e in answered.values()}.values(), key=lambda e: e.seq)
        return [
            *(sse.encode(e.data, id=cursor.event_id(stream, e.seq)) for e in kept),
            *(sse.encode(error_message(i, f"Events of this stream were lost: {reason}")) for i in lost),
        ]

    def deliver(
        self,
        record: SessionRecord,
        stream: str,
        after: int,
        *,
        resumed: bool = False,
        trace: str = "",
        opened: Signal | None = None,
    ) -> AsyncIterator[bytes]:
        """`_deliver`; a resume in a span of the stream's trace (`trace`: its stored traceparent);
        `opened`: the signal `open_stream` gave, for the stream's first delivery."""
        events = self._deliver(record, stream, after, resumed=resumed, opened=opened)
        if resumed and self._tracer.enabled:
            return spans.resumed(self._tracer, events, record.id, stream, after, trace)
        return events

    async def _deliver(
        self, record: SessionRecord, stream: str, after: int, *, resumed: bool, opened: Signal | None
    ) -> AsyncIterator[bytes]:
        """The SSE body for one client connection on `stream`, starting after seq `after`.

        A poll marker (written only for 2025-11-25 sessions: the upstream closed the stream for the
        client to poll) ends the connection with the upstream's retry hint, once the connection has
        delivered something: a resumed connection skips markers until its first message (the close
        its client already saw, and polls of an upstream that had nothing new), so every connection
        moves the client's cursor on or waits, never closes empty-handed in a loop.
        """
        if record.protocol in PRIMING_VERSIONS:
            # 2025-11-25 transports §Resumability: priming event (an id, empty data) and retry; a
            # resumed stream is primed too, with the client's own cursor.
            yield sse.encode(None, id=cursor.event_id(stream, after), retry=self._config.retry_ms)
        # Join the tail lazily: a stream this replica pumps never needs a subscription; a tailed
        # one holds its Watch, not a context manager and exit stack (docs/decisions/0009).
        joined: list[Watch] = []

        async def watch() -> tuple[Watch, bool]:
            if not joined:
                joined.append(await self.tail.join(record, stream))
                return joined[0], True
            return joined[0], False

        # The relay loop itself is inline (not a nested generator): an idle stream holds each
        # generator frame, and each generator's entry in the loop's registry, for its life.
        skip_polls = resumed
        self._listeners.enter((record.id, stream))  # the pump sees a client
        try:
            last_write = time.monotonic()
            while True:
                if self.draining.is_set():
                    # Graceful drain: end the connection; the client resumes on another replica.
                    yield sse.retry_hint(self._config.retry_ms)
                    return
                try:
                    entries, failure = await self._next(record, stream, after, last_write, watch, opened)
                except errors.StoreError as exc:
                    # The store blinked: end this connection cleanly; the client resumes from its
                    # Last-Event-ID (nothing it was sent is lost: every event was in Redis first).
                    log.error("stream %s: store error while delivering, ending the connection: %s", stream, exc)
                    self._metrics.store_errors.inc()
                    yield sse.retry_hint(self._config.retry_ms)
                    return
                if failure is not None:
                    for event in failure:
                        yield event
                    return
                if entries and entries[0].seq != after + 1:
                    # This connection fell behind the stream's trimming: a gap, never a silent skip.
                    for event in await self.gap_events(record, stream, f"events after {after} were trimmed"):
                        yield event
                    return
                for entry in entries:
                    if entry.type == END:
                        return
                    if entry.type == POLL:
                        after = entry.seq
                        if not skip_polls:
                            yield sse.retry_hint(int(entry.data or self._config.retry_ms))
                            return
                        continue
                    yield sse.encode(entry.data, id=cursor.event_id(stream, entry.seq))
                    skip_polls = False
                    self._metrics.events_relayed.inc()
                    after = entry.seq
                now = time.monotonic()
                if entries:
                    last_write = now
                elif now - last_write >= self._config.keepalive:
                    yield sse.KEEPALIVE  # transports: keep idle streams alive through proxies
                    last_write = now
        finally:
            self._listeners.leave((record.id, stream))
            if joined:
                self.tail.leave(joined[0])

    async def _next(
        self,
        record: SessionRecord,
        stream: str,
        after: int,
        last_write: float,
        watch: Callable[[], Awaitable[tuple[Watch, bool]]],
        opened: Signal | None = None,
    ) -> tuple[list[Entry], list[bytes] | None]:
        """The next entries after `after` (maybe none, on a keep-alive tick) or final events."""
        budget = max(0.05, self._config.keepalive - (time.monotonic() - last_write))
        signal: Signal | None = self.signals.get(record.id, stream)
        if signal is None and opened is not None:
            # The pump that opened the stream stopped before its first delivery began (an answer
            # that came whole with its headers): what it wrote last, from memory, not the tail.
            if opened.failure is not None:
                return [], opened.failure
            held = opened.entries_after(after)
            if held:
                return held, None
        if signal is not None:
            # This replica pumps the stream: its signal knows the newest seq and holds the entries
            # of the last append, so a delivery that keeps up reads nothing back from Redis.
            if signal.failure is not None:
                return [], signal.failure
            await signal.wait(after, budget)
            held = signal.entries_after(after)
            return (held if held is not None else await self._read(record, stream, after)), None
        # Pumped elsewhere (or by nobody yet): the multiplexed tail wakes us; read only then. An idle
        # stream costs Redis nothing: a keep-alive tick without a notification reads nothing.
        watched, fresh = await watch()
        if fresh:
            entries = await self._read(record, stream, after)
            if entries:
                return entries, None
        if watched.vanished:
            return [], await self.gap_events(record, stream, "the stream's state vanished from the store")
        version = watched.version
        await watched.wait(after, budget)
        if watched.version == version and watched.seq <= after:
            return [], None
        return await self._read(record, stream, after), None

    async def _read(self, record: SessionRecord, stream: str, after: int) -> list[Entry]:
        # An overloaded pool is waited out, not fatal to the stream.
        return await store_busy().run(lambda: self._log.read(record.id, stream, after))
