"""The pump: upstream SSE -> Redis, one replica at a time per stream (the lease holder).

A pump reads upstream events and appends each to the stream's Redis log *before* anyone
delivers it. Its lease is not renewed per stream (the replica's liveness heartbeat stands for
every pump of the replica); each append checks the lease, so a pump whose stream was taken
over stops at its next write. It keeps running when the client disconnects (transports: disconnect is not
cancellation) until every request of the stream has its response, the upstream stays idle
too long, or the stream cannot be resumed; then it appends JSON-RPC errors for whatever is
still pending and the end marker, so no request is ever left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import errors
from gateway.retry import store_busy, store_handover, upstream_resume
from gateway.store.eventlog import EventLog, LeaseLost, StreamVanished, appended
from gateway.store.sessions import SessionRecord
from gateway.streams.endings import CannotResume, PumpAbandoned, PumpIdle
from gateway.streams.listeners import Detachment
from gateway.streams.opening import Opening
from gateway.streams.sifting import ReplaySifter
from gateway.streams.signals import Signal
from gateway.tracing import attributes as a
from gateway.tracing.api import NOOP, Attrs, Tracer
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.wire import sse
from gateway.wire.answers import answered_ids, error_message
from gateway.wire.protocol import H_LAST_EVENT_ID, H_SESSION, H_VERSION, PRIMING_VERSIONS, SSE

log = logging.getLogger("gateway.streams.pump")

MAX_FRUITLESS_RECONNECTS = 3
DEFAULT_UPSTREAM_RETRY_MS = 100
RECENT_IDS = 256  # upstream event ids remembered to drop the ones a resumed upstream replays again
CATCH_UP_TIMEOUT = 5.0  # s: bound on the one extra replay that closes an upstream's replay->live window


@dataclass(frozen=True)
class PumpConfig:
    idle_timeout: float
    max_line: int = 1 << 20
    repoll: float = 2.0  # re-poll a silent resumed upstream stream after this many seconds
    abandon_after: float = 0.0  # end a standalone stream with no client here this long (0: never)


@dataclass(slots=True)
class Pump:
    log: EventLog
    upstream: UpstreamClient
    config: PumpConfig
    record: SessionRecord
    stream: str
    kind: str  # "post" (answers a POST) or "get" (standalone stream)
    pending: list[Any]
    owner: str
    signal: Signal
    uid: str = ""
    tracer: Tracer = NOOP
    seq: int = 0  # the last seq this pump knows is in the log (checked by every append)
    retry_ms: int = DEFAULT_UPSTREAM_RETRY_MS
    finished: bool = False
    lost: bool = False  # the lease went to another replica: never write, never release
    _boundary: bool = False  # on a resumed upstream connection whose replay->live boundary is still ahead
    _last_event: float = 0.0
    _recent: list[str] = field(default_factory=list)  # the newest upstream ids logged (see _remember)
    opening: Opening | None = None  # the stream is not in the store yet: the first write creates it
    detachment: Detachment | None = None  # a standalone stream: is a client delivering it here?
    tokens: tuple[Any, ...] | None = ()  # progress tokens of the stream's requests (None: not recorded)
    dropped: Callable[[str], None] | None = None  # counts a replayed message dropped, by reason
    _sifter: ReplaySifter | None = None  # made by the first re-opened connection's first event

    async def run(self, first: UpstreamResponse | None) -> None:
        """Pump until the stream ends; `first` is the open upstream response, or None to resume.

        One span for the pump's life, under the request that opened the stream (or the takeover).
        (One coroutine with `_main`'s loop under it: an idle stream holds each frame for its life.)"""
        attrs = {a.STREAM: self.stream, a.STREAM_KIND: self.kind, a.SESSION: a.session_prefix(self.record.id)}
        with self.tracer.span("mcp.stream.pump", attrs=attrs) as span:
            try:
                await self._main(first)
            except LeaseLost:
                self.lost = True
                log.info("stream %s: lease lost, another replica pumps it now", self.stream)
            except StreamVanished as exc:
                log.warning("stream %s: %s; failing %d pending request(s)", self.stream, exc, len(self.pending))
                self.signal.fail(
                    [sse.encode(error_message(i, "Stream state was lost by the gateway's store")) for i in self.pending]
                )
            except errors.StoreError as exc:
                log.error("stream %s: store failed: %s", self.stream, exc)
            finally:
                if self.opening is not None:
                    self.opening.failed(errors.StoreError("the stream could not be created"))
                self.signal.close()
                if not self.finished and not self.lost:
                    # Hand over at once (drain deadline, store hiccup): another replica adopts it.
                    with contextlib.suppress(errors.StoreError, asyncio.CancelledError):
                        await asyncio.shield(self._hand_over())
                span.set(a.OUTCOME, "finished" if self.finished else "lost" if self.lost else "handed over")
                span.set(a.PENDING, len(self.pending))

    async def _hand_over(self) -> None:
        """Release the lease, through a store failover too: until then its holder (this live
        replica) keeps every other replica from adopting the stream."""
        async for attempt in store_handover():
            with attempt:
                await self.log.release(self.record.id, self.stream, self.owner)

    async def _main(self, first: UpstreamResponse | None) -> None:
        response = first
        fruitless = 0
        self._last_event = time.monotonic()
        try:
            while not self.finished:
                resumed = response is None
                if response is None:
                    response = await self._reopen()
                    self._boundary = True
                try:
                    progressed, repoll = await self._consume(response, resumed=resumed)
                finally:
                    response.close()
                    response = None
                    ReplaySifter.told(self._sifter)
                if self.finished:
                    return
                if self.kind == "post" and not self.pending:
                    await self._append([], final=True)
                    return
                if not self.uid:
                    if self.kind == "get":
                        await self._append([], final=True)
                        return
                    raise CannotResume("the upstream closed the stream without a resumable event id")
                if not repoll:
                    fruitless = 0 if progressed else fruitless + 1
                    if self.kind == "post" and self.record.protocol in PRIMING_VERSIONS:
                        # 2025-11-25 transports §Resumability: the upstream closed the stream for the
                        # client to poll; pass the close on (deliveries end with its retry hint).
                        await self._append([], poll_ms=self.retry_ms)
                if fruitless > MAX_FRUITLESS_RECONNECTS:
                    raise CannotResume("the upstream keeps closing the stream without new events")
                # 2025-11-25 transports §Resumability: honour the upstream's retry before reconnecting.
                await asyncio.sleep(self.retry_ms / 1000)
        except CannotResume as exc:
            await self._fail(f"Upstream stream lost and could not be resumed: {exc}")
        except PumpIdle:
            if self.kind == "get":
                await self._append([], final=True)
            else:
                await self._fail("Upstream sent nothing within the gateway's idle bound")
        except PumpAbandoned:
            # Nothing is pending on a standalone stream: ending it loses no answer. A client that
            # comes back within the retention resumes what was logged, then listens afresh
            # (transports §Listening for Messages: the client may GET again at any time).
            log.info("stream %s: no client any more, giving its upstream connection back", self.stream)
            await self._append([], final=True)

    async def _consume(self, response: UpstreamResponse, *, resumed: bool) -> tuple[bool, bool]:
        """Read one upstream connection; returns (progressed, closed by us to re-poll).

        Some upstreams replay after Last-Event-ID but never live-tail a resumed stream; on a
        resumed connection that stays silent for `repoll` seconds the pump reconnects with the
        newest upstream event id instead of waiting for the idle bound.
        """
        response.forget_headers()  # relayed already (the client's own headers were built from them)
        parser = sse.Parser(self.config.max_line)
        progressed = False
        # A new stream is created with what came with the upstream's headers, or right behind them.
        chunk = await self._arrived(response) if self.opening is not None else None
        detachment = self.detachment if self.kind == "get" else None
        silent_since = time.monotonic()
        while not self.finished:
            if chunk is None:
                now = time.monotonic()
                wait = self.config.idle_timeout - (now - self._last_event)
                if resumed:
                    wait = min(wait, self.config.repoll - (now - silent_since))
                if detachment is not None:  # look for a client again this often (a coarse timer)
                    wait = min(wait, detachment.after / 2)
                try:
                    # A coroutine per read, not an async generator and a timeout context held while idle.
                    chunk = await response.next_chunk(max(wait, 0.0))
                    if chunk is None:
                        return progressed, False
                except TimeoutError:
                    now = time.monotonic()
                    if now - self._last_event >= self.config.idle_timeout:
                        raise PumpIdle() from None
                    if detachment is not None and detachment.abandoned(now):
                        raise PumpAbandoned() from None
                    if resumed and now - silent_since >= self.config.repoll:
                        return progressed, True
                    continue
                except errors.UpstreamError as exc:
                    log.info("stream %s: upstream stream broke: %s", self.stream, exc)
                    return progressed, False
            try:
                events = parser.feed(chunk)
            except sse.SSEError as exc:
                raise CannotResume(f"malformed SSE from upstream: {exc}") from exc
            chunk = None
            silent_since = time.monotonic()
            if events and await self._handle(events, resumed=resumed):
                progressed = True
                self._last_event = time.monotonic()
            if self.opening is not None:  # no complete event came with the headers: created empty
                await self._append([])
        return progressed, False

    async def _arrived(self, response: UpstreamResponse) -> bytes:
        """What the upstream sent already: its first events often follow the headers in another
        packet that is in already (one loop turn lets the loop read it); never waits for more."""
        chunk = response.take_buffered()
        if not chunk:
            await asyncio.sleep(0)
            chunk = response.take_buffered()
        return chunk

    async def _handle(self, events: list[sse.Event], *, resumed: bool) -> bool:
        batch: list[tuple[str, str]] = []
        uid = ""
        progressed = False
        for event in events:
            if event.id and not event.data and self._boundary and event.id not in self._recent:
                # A resumed upstream primes the connection where its replay ends and live events start
                # (2025-11-25 transports §Resumability). The Python SDK registers the connection for
                # live events only after that, so an event produced meanwhile is stored but sent on no
                # connection: fetch once more from what we have, then carry on (duplicates dropped).
                self._boundary = False
                self._remember(event.id)
                progressed |= await self._flush(batch, uid)
                batch, uid = [], ""
                progressed |= await self._catch_up()
                if self.finished:
                    return progressed  # the catch-up brought the last answer
                continue
            uid = self._take(event, batch, resumed=resumed) or uid
        return await self._flush(batch, uid) or progressed

    def _remember(self, uid: str) -> None:
        """Keep at least the newest RECENT_IDS upstream ids (a list: a deque's block costs ~600 B
        per idle stream); trimmed in steps so appends stay cheap."""
        self._recent.append(uid)
        if len(self._recent) > RECENT_IDS + RECENT_IDS // 4:
            del self._recent[: len(self._recent) - RECENT_IDS]

    def _take(self, event: sse.Event, batch: list[tuple[str, str]], *, resumed: bool) -> str:
        """Add one upstream event to `batch` unless logged or (re-opened) not this stream's; its id."""
        log.debug("stream %s: upstream event id=%r data=%d bytes", self.stream, event.id, len(event.data or ""))
        if event.retry is not None:
            self.retry_ms = event.retry
        if event.id:
            if event.id in self._recent:
                return ""  # a replayed event we already logged
            self._remember(event.id)
        data = self._sift(event.data) if resumed and event.data else event.data
        if data:  # a priming event (no data), or one with nothing of this stream's, only moves the cursor
            batch.append((data, event.id or ""))
            if self.pending:
                for answered in answered_ids(data):
                    if answered in self.pending:
                        self.pending.remove(answered)
        return event.id or ""

    def _sift(self, data: str) -> str | None:
        # transports §Resumability: a replay is of the same stream only (some upstreams replay more).
        self._sifter = self._sifter or ReplaySifter(self.stream, self.dropped)
        return self._sifter.sift(data, pending=self.pending, tokens=self.tokens)

    async def _flush(self, batch: list[tuple[str, str]], uid: str) -> bool:
        if not batch and not uid:
            return False
        final = self.kind == "post" and not self.pending
        await self._append(batch, uid=uid, final=final)
        return bool(batch)

    async def _catch_up(self) -> bool:
        """One replay-only GET after the newest logged upstream id; best effort, bounded in time."""
        try:
            response = await self._reopen()
        except CannotResume as exc:
            log.info("stream %s: catch-up replay not possible: %s", self.stream, exc)
            return False
        parser = sse.Parser(self.config.max_line)
        batch: list[tuple[str, str]] = []
        uid = ""
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT):
                async for chunk in response.chunks():
                    for event in parser.feed(chunk):
                        uid = self._take(event, batch, resumed=True) or uid
        except (TimeoutError, errors.UpstreamError, sse.SSEError) as exc:
            log.info("stream %s: catch-up replay ended early: %s", self.stream, exc)
        finally:
            response.close()
            ReplaySifter.told(self._sifter)
        if batch:
            log.info("stream %s: catch-up replay found %d event(s) the resumed stream skipped", self.stream, len(batch))
        return await self._flush(batch, uid)

    async def _append(
        self, batch: list[tuple[str, str]], *, uid: str = "", final: bool = False, poll_ms: int | None = None
    ) -> None:
        before = self.seq
        if self.opening is not None:  # the request's `redis create` span covers this write
            seq = await self._open(self.opening, batch, uid=uid, final=final)
        else:
            events = len(batch)
            attrs: Attrs = {a.DB_SYSTEM: "redis", a.DB_OPERATION: "EVALSHA", a.STREAM: self.stream, a.EVENTS: events}
            with self.tracer.span("redis append", kind="client", attrs=attrs):
                seq = await self._append_retrying(batch, uid=uid, final=final, poll_ms=poll_ms)
        self.seq = seq
        if uid:
            self.uid = uid
        if final:
            self.finished = True
        written = appended(before, batch, final=final, poll_ms=poll_ms)  # the script checked `expect`
        self.signal.notify(seq, written if written and written[-1].seq == seq else ())

    async def _open(self, opening: Opening, batch: list[tuple[str, str]], *, uid: str, final: bool) -> int:
        try:
            seq = await store_busy().run(
                lambda: self.log.open(
                    self.record.id,
                    self.stream,
                    kind=self.kind,
                    pending=tuple(self.pending),
                    owner=self.owner,
                    trace=opening.trace,
                    registration=opening.registration,
                    tokens=self.tokens if self.kind == "post" else None,
                    events=batch,
                    uid=uid,
                    final=final,
                )
            )
        except BaseException as exc:
            opening.failed(exc)
            raise
        self.opening = None
        if not opening.done.done():  # its request may have stopped waiting (a client that left)
            opening.done.set_result(None)
        return seq

    async def _append_retrying(
        self, batch: list[tuple[str, str]], *, uid: str, final: bool, poll_ms: int | None
    ) -> int:
        # Nothing was sent when the pool was busy: retrying cannot double an entry.
        return await store_busy().run(
            lambda: self.log.append(
                self.record.id,
                self.stream,
                self.owner,
                batch,
                pending=tuple(self.pending),
                uid=uid,
                final=final,
                poll_ms=poll_ms,
                expect=self.seq,
            )
        )

    async def _fail(self, message: str) -> None:
        pending = len(self.pending)
        level = logging.WARNING if pending else logging.INFO  # nothing pending: nobody gets an error
        log.log(level, "stream %s: %s; answering %d pending request(s) with errors", self.stream, message, pending)
        batch = [(error_message(i, message), "") for i in self.pending]
        self.pending.clear()
        await self._append(batch, final=True)

    async def _reopen(self) -> UpstreamResponse:
        """Re-open the upstream stream after the last upstream event id (upstream resumability)."""
        log.debug("stream %s: re-opening upstream stream after %r", self.stream, self.uid)
        if not self.uid:
            raise CannotResume("the upstream gave no event id to resume from")
        headers: dict[str, str] = {"Accept": SSE, H_LAST_EVENT_ID: self.uid}
        if self.record.upstream_sid:
            headers[H_SESSION] = self.record.upstream_sid
        if self.record.protocol != "2025-03-26":
            headers[H_VERSION] = self.record.protocol
        try:
            async for attempt in upstream_resume():
                with attempt:
                    response = await self.upstream.send("GET", self.record.instance, headers, retry_connect=False)
        except errors.GatewayError as exc:
            raise CannotResume(exc.message) from exc
        if response.status != 200 or not response.is_sse:
            response.close()
            raise CannotResume(f"the upstream answered the resume with HTTP {response.status}")
        return response
