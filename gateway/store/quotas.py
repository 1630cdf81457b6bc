"""Quotas as token buckets kept in Redis (GCRA), so a budget is the fleet's, not a replica's.

GCRA keeps one number per bucket: the theoretical arrival time (TAT) of the next request. A request
is admitted when now >= TAT - (burst - 1) * interval, and then pushes TAT one interval further. At
most `burst` requests pass at once and the bucket refills at one token per interval. The clock is
Redis's own (`TIME`), so replicas with skewed clocks still share one exact budget.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys

# KEYS: bucket. ARGV: interval us, burst. Returns {1, 0} admitted or {0, microseconds to wait}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local earliest = tat - interval * (tonumber(ARGV[2]) - 1)
if now < earliest then return {0, earliest - now} end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class Taken:
    admitted: bool
    retry_after: float  # seconds until the bucket admits one more (0 when admitted)

    @property
    def retry_after_header(self) -> str:
        """Retry-After in whole seconds (RFC 9110 §10.2.3), never 0 for a refusal."""
        return str(max(1, math.ceil(self.retry_after)))


def rule_id(text: str) -> str:
    """A quota's bucket name: a changed rule starts a new budget."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Quotas:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._keys = keys
        self._gcra = Script(redis, _GCRA)

    async def take(self, rule: str, key: str, *, per_second: float, burst: int) -> Taken:
        """One request against bucket (rule, key): admitted, or refused with the time to wait."""
        interval_us = max(1, round(1_000_000 / per_second))
        with translated():
            admitted, wait_us = await self._gcra(keys=[self._keys.quota(rule, key)], args=[interval_us, burst])
        return Taken(bool(int(admitted)), int(wait_us) / 1_000_000)
