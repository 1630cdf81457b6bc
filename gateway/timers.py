"""Coarse timers for the long waits of idle streams: one loop timer per tick that has any.

An idle stream waits twice, each with a bound of seconds to minutes: its delivery for the next
event or the keep-alive tick, its pump for the upstream's next bytes or the idle bound. A loop
timer per wait (uvloop's TimerHandle and libuv timer) is most of what such a wait costs
(docs/decisions/0009); here a wait of at least `coarse_from` seconds joins the bucket of its deadline rounded up to the
next `tick`, and each bucket holds one loop timer. A wait fires up to `tick` seconds late; shorter
waits keep the loop's own exact timer. Created in the app's lifespan, on its loop; a component
built without it (in unit tests) gets `EXACT`, the loop's own timer for every wait.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    def call_later(self, delay: float, callback: Callable[[Any], object], arg: Any) -> Cancellable: ...


class _Exact:
    """The running loop's own timer for every wait."""

    def call_later(self, delay: float, callback: Callable[[Any], object], arg: Any) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback, arg)


EXACT: Timers = _Exact()  # stateless: one for every component built without the app's CoarseTimers


class _Timer:
    __slots__ = ("_arg", "_bucket", "_callback")

    def __init__(self, bucket: dict[_Timer, None], callback: Callable[[Any], object], arg: Any) -> None:
        self._bucket: dict[_Timer, None] | None = bucket
        self._callback = callback
        self._arg = arg

    def cancel(self) -> None:
        bucket, self._bucket = self._bucket, None
        if bucket is not None:
            bucket.pop(self, None)


class CoarseTimers:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, tick: float = 0.25, coarse_from: float = 1.0) -> None:
        self._loop = loop
        self._tick = tick
        self._coarse_from = coarse_from
        self._buckets: dict[int, dict[_Timer, None]] = {}

    def call_later(self, delay: float, callback: Callable[[Any], object], arg: Any) -> Cancellable:
        """`callback(arg)` after `delay` s (for a long delay: up to `tick` s later), unless cancelled."""
        loop = self._loop
        if delay < self._coarse_from:
            return loop.call_later(delay, callback, arg)
        slot = math.ceil((loop.time() + delay) / self._tick)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = {}
            loop.call_at(slot * self._tick, self._fire, slot)
        timer = _Timer(bucket, callback, arg)
        bucket[timer] = None
        return timer

    def _fire(self, slot: int) -> None:
        bucket = self._buckets.pop(slot, None)
        if not bucket:
            return
        for timer in list(bucket):  # a callback may cancel another timer of this bucket
            if timer._bucket is not None:
                timer._bucket = None
                timer._callback(timer._arg)

    def __len__(self) -> int:
        """Timers armed and not cancelled."""
        return sum(len(bucket) for bucket in self._buckets.values())
