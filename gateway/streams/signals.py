"""Same-replica fast path: a pump wakes the deliveries of its stream without a Redis poll, and
hands them the entries of its last append (already in Redis, with their Redis sequence numbers),
so a delivery that kept up reads nothing back. One that fell behind reads Redis, as deliveries on
other replicas always do (woken by the multiplexed tail).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from gateway.store.eventlog import Entry
from gateway.timers import EXACT, Timers


class Signal:
    """The newest sequence number a local pump wrote, and whether it stopped."""

    __slots__ = ("_timers", "_waiters", "closed", "failure", "last", "seq", "version")

    def __init__(self, seq: int = 0, timers: Timers = EXACT) -> None:
        self._timers = timers
        self.seq = seq  # every entry up to `seq` is already in Redis
        self.version = 0  # bumped by every notify: a waiter tells a wake-up from a timeout
        self.closed = False
        self.failure: list[bytes] | None = None
        self.last: Sequence[Entry] = ()  # the entries of the pump's last append, ending at `seq`
        # One bare future per waiting delivery, woken by the next notify (an asyncio.Event and an
        # asyncio.timeout per wait cost more per idle stream: docs/decisions/0009).
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self, seq: int, written: Sequence[Entry] = ()) -> None:
        if written:
            self.last = written
        elif seq > self.seq:
            self.last = ()
        self.seq = max(self.seq, seq)
        self.version += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, events: list[bytes]) -> None:
        """The store lost the stream: hand the local deliveries their final error events."""
        self.failure = events
        self.close()

    def close(self) -> None:
        self.closed = True
        self.notify(self.seq)

    def entries_after(self, after: int) -> list[Entry] | None:
        """Everything after `after` from memory ([] on a tick with nothing new), or None: read Redis
        (the delivery fell behind the last append, or the pump stopped and the delivery has all
        it wrote: what comes next, if anything, another pump writes)."""
        if self.seq == after:
            return None if self.closed else []
        last = self.last
        if last and last[0].seq <= after + 1 and last[-1].seq == self.seq:
            # Also once the pump stopped: a call's last answer usually lands with the close.
            return [e for e in last if e.seq > after]
        return None

    async def wait(self, after: int, timeout: float) -> None:
        """Return when something after `after` was written, the pump stopped, or on timeout."""
        if self.seq > after or self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        # No extra task, unlike wait_for; a keep-alive-long wait shares a coarse timer.
        timer = self._timers.call_later(max(timeout, 0.0), _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if not waiter.done():  # cancelled while waiting: a later notify must not find it
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Signals:
    """Signals of the streams this replica pumps, by (session, stream)."""

    def __init__(self, timers: Timers = EXACT) -> None:
        self._signals: dict[tuple[str, str], Signal] = {}
        self._timers = timers

    def open(self, session: str, stream: str, seq: int = 0) -> Signal:
        signal = Signal(seq, self._timers)
        self._signals[(session, stream)] = signal
        return signal

    def get(self, session: str, stream: str) -> Signal | None:
        return self._signals.get((session, stream))

    def drop(self, session: str, stream: str, signal: Signal) -> None:
        if self._signals.get((session, stream)) is signal:
            del self._signals[(session, stream)]

    def wake_all(self) -> None:
        """Wake every waiting delivery (graceful drain)."""
        for signal in list(self._signals.values()):
            signal.notify(signal.seq)

    def __len__(self) -> int:
        return len(self._signals)
