"""Same-replica wake-ups between a pump and its local deliveries."""

from __future__ import annotations

import asyncio
import time

from gateway.store.eventlog import END, MESSAGE, Entry
from gateway.streams.signals import Signal, Signals


async def test_wait_returns_at_once_when_behind() -> None:
    signal = Signal()
    signal.notify(3)
    started = time.monotonic()
    await signal.wait(2, timeout=5)
    assert time.monotonic() - started < 0.1
    assert signal.seq == 3


async def test_wait_wakes_on_notify() -> None:
    signal = Signal()
    waiter = asyncio.create_task(signal.wait(0, timeout=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    signal.notify(1)
    await asyncio.wait_for(waiter, 1)
    assert signal.seq == 1


async def test_notify_wakes_every_waiter() -> None:
    signal = Signal()
    waiters = [asyncio.create_task(signal.wait(0, timeout=5)) for _ in range(5)]
    await asyncio.sleep(0.02)
    signal.notify(1)
    done, pending = await asyncio.wait(waiters, timeout=1)
    assert len(done) == 5 and not pending


async def test_wait_times_out() -> None:
    signal = Signal()
    signal.notify(2)
    started = time.monotonic()
    await signal.wait(2, timeout=0.1)  # nothing after 2: returns on timeout, no exception
    elapsed = time.monotonic() - started
    assert 0.08 <= elapsed < 1


async def test_seq_never_goes_back() -> None:
    signal = Signal()
    signal.notify(5)
    signal.notify(3)
    assert signal.seq == 5


async def test_close_wakes_and_stays_closed() -> None:
    signal = Signal()
    waiter = asyncio.create_task(signal.wait(0, timeout=5))
    await asyncio.sleep(0.02)
    signal.close()
    await asyncio.wait_for(waiter, 1)
    assert signal.closed and signal.failure is None
    started = time.monotonic()
    await signal.wait(100, timeout=5)  # a closed signal never blocks
    assert time.monotonic() - started < 0.1


async def test_fail_hands_over_events_and_closes() -> None:
    signal = Signal()
    signal.notify(4)
    waiter = asyncio.create_task(signal.wait(4, timeout=5))
    await asyncio.sleep(0.02)
    signal.fail([b"data: error\n\n"])
    await asyncio.wait_for(waiter, 1)
    assert signal.closed
    assert signal.failure == [b"data: error\n\n"]
    assert signal.seq == 4


async def test_signals_open_get_drop() -> None:
    signals = Signals()
    assert len(signals) == 0
    assert signals.get("g", "s") is None
    first = signals.open("g", "s")
    assert signals.get("g", "s") is first
    assert signals.get("g", "other") is None and signals.get("h", "s") is None
    other = signals.open("g", "t")
    assert len(signals) == 2
    # a newer pump replaced the signal: the old pump's drop must not remove the new one
    second = signals.open("g", "s")
    assert second is not first and signals.get("g", "s") is second
    signals.drop("g", "s", first)
    assert signals.get("g", "s") is second
    signals.drop("g", "s", second)
    assert signals.get("g", "s") is None
    signals.drop("g", "s", second)  # dropping twice is harmless
    assert len(signals) == 1 and signals.get("g", "t") is other


async def test_wake_all() -> None:
    signals = Signals()
    a = signals.open("g", "a")
    b = signals.open("h", "b")
    a.notify(3)
    waiters = [asyncio.create_task(a.wait(3, timeout=5)), asyncio.create_task(b.wait(0, timeout=5))]
    await asyncio.sleep(0.02)
    assert not any(w.done() for w in waiters)
    signals.wake_all()
    done, pending = await asyncio.wait(waiters, timeout=1)
    assert len(done) == 2 and not pending
    assert (a.seq, b.seq) == (3, 0)  # waking does not invent progress
    assert not a.closed and not b.closed


async def test_a_cancelled_or_expired_wait_leaves_no_waiter_behind() -> None:
    signal = Signal()
    await signal.wait(0, timeout=0.01)  # expired
    waiter = asyncio.create_task(signal.wait(0, timeout=5))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert signal._waiters == []  # an idle stream holds nothing but its own wait
    signal.notify(1)  # and a later notify finds nobody to wake


def test_entries_after_hands_over_the_last_append_or_says_read_redis() -> None:
    signal = Signal(2)
    assert signal.entries_after(2) == []  # nothing new: a tick, no read
    assert signal.entries_after(1) is None  # behind, nothing held: read Redis
    last = (Entry(3, MESSAGE, "a", ""), Entry(4, MESSAGE, "b", "u4"), Entry(5, END, "", ""))
    signal.notify(5, last)
    assert signal.entries_after(2) == list(last)
    assert signal.entries_after(3) == list(last[1:])
    assert signal.entries_after(1) is None  # seq 2 is not held: read it from Redis
    signal.notify(6)  # written without entries handed over (e.g. a mismatch): never serve stale ones
    assert signal.entries_after(5) is None
    signal.notify(7, (Entry(7, MESSAGE, "c", ""),))
    assert signal.entries_after(6) == [Entry(7, MESSAGE, "c", "")]
    signal.close()
    # The pump stopped: its last append still serves a delivery behind it (a call's final answer
    # lands with the close; no read back), but only Redis knows what comes after it.
    assert signal.entries_after(6) == [Entry(7, MESSAGE, "c", "")]
    assert signal.entries_after(7) is None
    assert signal.entries_after(5) is None
