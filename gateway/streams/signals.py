"""Same-replica fast path: a pump wakes the deliveries of its stream without a Redis poll.

Deliveries on other replicas tail Redis with XREAD BLOCK instead; both read the entries
themselves from Redis, so event ids are always the Redis sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib


class Signal:
    """The newest sequence number a local pump wrote, and whether it stopped."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq  # every entry up to `seq` is already in Redis
        self.version = 0  # bumped by every notify: a waiter tells a wake-up from a timeout
        self.closed = False
        self.failure: list[bytes] | None = None
        # One bare future per waiting delivery, woken by the next notify (an asyncio.Event and an
        # asyncio.timeout per wait cost ~1 KB more per idle stream: the Event's deque, the Timeout).
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self, seq: int) -> None:
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

    async def wait(self, after: int, timeout: float) -> None:
        """Return when something after `after` was written, the pump stopped, or on timeout."""
        if self.seq > after or self.closed:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(max(timeout, 0.0), _expire, waiter)  # no extra task, unlike wait_for
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

    def __init__(self) -> None:
        self._signals: dict[tuple[str, str], Signal] = {}

    def open(self, session: str, stream: str, seq: int = 0) -> Signal:
        signal = Signal(seq)
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
