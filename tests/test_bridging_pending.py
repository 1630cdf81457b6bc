"""Open rounds of bridged multi round-trip calls on a real Redis: single use, abandoned ones cancelled."""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway.bridging.onto_2025.pending import OpenRounds
from gateway.bridging.onto_2025.rounds import Round
from gateway.store.keys import Keys
from tests.clocks import Clock


def a_round(call: str, expires: float, last_event: str = "e1") -> Round:
    return Round(
        principal="p",
        method="tools/call",
        name="t",
        pool="default",
        instance="http://u/mcp",
        digest="d" * 32,
        call=call,
        asked={"u0": 0},
        last_event=last_event,
        expires=expires,
    )


async def test_a_round_is_taken_once(redis: aioredis.Redis, keys: Keys) -> None:
    rounds = OpenRounds(redis, keys)
    first = a_round("c1", 2000.0)
    await rounds.opened(first)
    assert await rounds.take(first) is True
    assert await rounds.take(first) is False  # a replayed requestState
    assert await rounds.take(a_round("c1", 2000.0, last_event="e2")) is False  # never opened


async def test_abandoned_rounds_are_cancelled_once(redis: aioredis.Redis, keys: Keys) -> None:
    clock = Clock(1000.0)
    rounds, other = OpenRounds(redis, keys, clock=clock), OpenRounds(redis, keys, clock=clock)
    await rounds.opened(a_round("old", 1500.0))
    await rounds.opened(a_round("young", 2500.0))
    cancelled: list[tuple[str, str]] = []

    async def cancel(digest: str, call: str) -> None:
        cancelled.append((digest, call))

    assert await rounds.reap(cancel) == 0
    clock.now = 2000.0
    assert await rounds.reap(cancel) + await other.reap(cancel) == 1
    assert cancelled == [("d" * 32, "old")]
    assert await rounds.take(a_round("old", 1500.0)) is False  # too late: its call was cancelled
    assert await rounds.take(a_round("young", 2500.0)) is True
