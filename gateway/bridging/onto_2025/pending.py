"""Open rounds of multi round-trip requests: each `requestState` is used once, and a call whose
client never comes back is cancelled upstream.

A bridged call that asked the client something waits upstream for the answer. Its round is kept
in a sorted set scored by the state's expiry: the retry takes it out (ZREM: the replica that
removes it goes on, so a replayed state is refused: mrtr §Server Requirements, a state that must
be consumed once is enforced server-side); a round still there after its expiry is taken out by
whichever replica's reaper removes it first, which cancels the upstream call
(`notifications/cancelled`), so no upstream call waits forever for a client that went away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.bridging.onto_2025.rounds import Round
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys

log = logging.getLogger("gateway.bridging.onto_2025.pending")

REAP_INTERVAL = 5.0  # s between looks for abandoned rounds

Cancel = Callable[[str, str], Awaitable[None]]  # (held session digest, upstream call id)


def member(round_: Round) -> str:
    return json.dumps([round_.digest, round_.call, round_.last_event])


class OpenRounds:
    def __init__(self, redis: Redis, keys: Keys, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._key = keys.bridge_rounds()
        self._clock = clock

    async def opened(self, round_: Round) -> None:
        with translated():
            await self._redis.zadd(self._key, {member(round_): round_.expires})

    async def take(self, round_: Round) -> bool:
        """True for the one retry that continues this round."""
        with translated():
            return bool(await self._redis.zrem(self._key, member(round_)))

    async def reap(self, cancel: Cancel) -> int:
        with translated():
            stale = await self._redis.zrangebyscore(self._key, "-inf", self._clock())
        reaped = 0
        for raw in stale:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            with translated():
                if not await self._redis.zrem(self._key, text):
                    continue  # another replica's reaper (or a late retry) took it
            digest, call, _ = json.loads(text)
            await cancel(digest, call)
            reaped += 1
        return reaped

    async def run(self, cancel: Cancel) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            try:
                await self.reap(cancel)
            except Exception:  # a store blip: the next round reaps what this one missed
                log.exception("reaping abandoned rounds failed")
