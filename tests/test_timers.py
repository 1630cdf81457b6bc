"""gateway.timers: coarse timers share one loop timer per tick; short waits keep exact ones."""

from __future__ import annotations

import asyncio

from gateway.timers import CoarseTimers


async def test_a_short_wait_keeps_the_loops_own_timer() -> None:
    loop = asyncio.get_running_loop()
    timers = CoarseTimers(loop, tick=0.05, coarse_from=1.0)
    fired = loop.create_future()
    handle = timers.call_later(0.01, fired.set_result, "short")
    assert isinstance(handle, asyncio.TimerHandle)
    assert len(timers) == 0
    assert await fired == "short"


async def test_long_waits_share_a_bucket_and_fire_after_their_deadline() -> None:
    loop = asyncio.get_running_loop()
    timers = CoarseTimers(loop, tick=0.05, coarse_from=0.02)
    fired: list[tuple[int, float]] = []
    all_fired = loop.create_future()

    def fire(i: int) -> None:
        fired.append((i, loop.time()))
        if len(fired) == 100:
            all_fired.set_result(None)

    start = loop.time()
    for i in range(100):
        timers.call_later(0.03, fire, i)
    assert len(timers._buckets) <= 2 and len(timers) == 100  # one loop timer per tick, not per wait
    await all_fired
    assert sorted(i for i, _ in fired) == list(range(100))
    assert min(t for _, t in fired) >= start + 0.03 - 1e-3  # never early (the loop's clock resolution aside)
    assert len(timers) == 0 and timers._buckets == {}


async def test_a_cancelled_timer_never_fires_even_when_cancelled_by_a_neighbour() -> None:
    loop = asyncio.get_running_loop()
    timers = CoarseTimers(loop, tick=0.05, coarse_from=0.02)
    fired: list[str] = []
    later = timers.call_later(0.03, fired.append, "cancelled first")
    later.cancel()
    second: list[object] = []

    def first(name: str) -> None:
        fired.append(name)
        second[0].cancel()  # type: ignore[attr-defined]

    timers.call_later(0.03, first, "first")
    second.append(timers.call_later(0.03, fired.append, "cancelled by first"))
    last = loop.create_future()
    done = timers.call_later(0.06, last.set_result, "last")
    fired.append(await last)
    assert fired == ["first", "last"]
    done.cancel()  # after firing: a no-op
    assert len(timers) == 0
