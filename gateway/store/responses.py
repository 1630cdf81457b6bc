"""The shared response cache in Redis (SEP-2549): answers every replica may serve until their ttlMs.

An entry is a hash (`g` generation, `x` deadline in epoch ms, `r` the result JSON) with PX = ttlMs.
Entries of one family (a pool's tools lists, or the reads of one URI) share a generation key in
the same hash slot; a notification replaces it with a new random value and every older entry is a
miss from then on (they expire by themselves). A miss returns the generation it saw, and the answer
is stored only if the generation is still that one: an answer fetched while a notification arrived
is never kept. Generations are random, never counters, and an entry is only ever written under an
existing one: a generation key that vanished (expired, evicted, FLUSHDB) makes its whole family a
miss instead of bringing an older generation back.

Never served past ttlMs: Redis expires the entry (PX), and a read also checks the stored deadline;
a hit says how much of the ttlMs is left (the smaller of the two). The generation key is kept at
least as long as any entry of its family.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys

# KEYS: generation, entry...  ->  {generation ('' when none)} or {generation, deadline, result, pttl}
# of the first entry of the current generation.
_LOOKUP = """
local gen = redis.call('GET', KEYS[1])
if not gen then return {''} end
for i = 2, #KEYS do
  local e = redis.call('HMGET', KEYS[i], 'g', 'x', 'r')
  if e[1] == gen and e[3] then return {gen, e[2], e[3], redis.call('PTTL', KEYS[i])} end
end
return {gen}
"""

# KEYS: generation, entry.  ARGV: generation seen at lookup, deadline ms, result, ttl ms, new generation.
# A family without a generation gets one (the new one) only if the lookup saw none either.
_STORE = """
local gen = redis.call('GET', KEYS[1])
if not gen then
  if ARGV[1] ~= '' then return 0 end
  gen = ARGV[5]
  redis.call('SET', KEYS[1], gen, 'PX', ARGV[4])
elseif gen ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], 'g', gen, 'x', ARGV[2], 'r', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
"""

# KEYS: generation.  ARGV: new generation, ttl ms when the key had none (it refuses in-flight stores).
_BUMP = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


def _new_generation() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Hit:
    result: dict[str, Any]
    remaining_ms: int


@dataclass(frozen=True)
class Lookup:
    generation: str
    hit: Hit | None


class ResponseStore:
    def __init__(self, redis: Redis, keys: Keys, *, max_ttl_ms: int, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._max_ttl_ms = max_ttl_ms
        self._clock = clock  # wall clock, seconds: the stored deadline is compared across replicas
        self._lookup = Script(redis, _LOOKUP)
        self._store = Script(redis, _STORE)
        self._bump = Script(redis, _BUMP)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def lookup(self, pool: str, family: str, digests: Sequence[str]) -> Lookup:
        """The current generation and the first fresh entry among `digests` (tried in order)."""
        entries = [self._keys.cache_entry(pool, family, d) for d in digests]
        with translated():
            found: list[Any] = await self._lookup(keys=[self._keys.cache_generation(pool, family), *entries])
        generation = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
        if len(found) < 4:
            return Lookup(generation, None)
        remaining = min(int(found[3]), int(found[1]) - self._now_ms())
        if remaining <= 0:
            return Lookup(generation, None)
        try:
            result = json.loads(found[2])
        except ValueError:
            return Lookup(generation, None)
        return Lookup(generation, Hit(result, remaining) if isinstance(result, dict) else None)

    async def store(self, pool: str, family: str, digest: str, generation: str, result: bytes, ttl_ms: int) -> bool:
        """Keep `result` for `ttl_ms` unless the family's generation moved on since the lookup."""
        deadline = self._now_ms() + ttl_ms
        keys = [self._keys.cache_generation(pool, family), self._keys.cache_entry(pool, family, digest)]
        with translated():
            stored = await self._store(keys=keys, args=[generation, deadline, result, ttl_ms, _new_generation()])
        return bool(stored)

    async def bump(self, pool: str, family: str) -> None:
        """Every entry of the family made so far is stale (a notification said it changed)."""
        with translated():
            key = self._keys.cache_generation(pool, family)
            await self._bump(keys=[key], args=[_new_generation(), self._max_ttl_ms])
