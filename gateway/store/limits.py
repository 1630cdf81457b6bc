"""Limits that hold across replicas, kept in Redis: request rate, sessions and open streams
per principal (or per client IP when anonymous). Each check is one Lua round trip.

The request rate (`--rate-limit`) is a quota of the policy's mechanism (`store/quotas.py`: a GCRA
bucket per principal or IP, `rate` a minute with a burst of as many). Sessions and streams are
sorted sets of members scored by their expiry, so entries of a replica that died fall out by
themselves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Counter

from gateway import errors
from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys
from gateway.store.quotas import Quotas

# KEYS: zset. ARGV: now, member, expiry, limit, key ttl ms. 1 admitted, 0 over the limit.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[2]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class TooManyRequests(errors.ClientError):
    status = 429
    headers = {"Retry-After": "1"}


@dataclass(frozen=True)
class LimitConfig:
    rate_per_minute: int = 0  # 0 = off
    max_sessions: int = 0
    max_streams: int = 0
    session_ttl: float = 3600.0
    stream_ttl: float = 30.0  # an open stream re-announces itself at least this often


class Limiter:
    def __init__(self, redis: Redis, keys: Keys, config: LimitConfig, *, hits: Counter | None = None) -> None:
        self._hits = hits  # mcpgw_limits_hit_total{limit}
        self._redis = redis
        self._keys = keys
        self.config = config
        self._quotas = Quotas(redis, keys)
        self._admit = Script(redis, _ADMIT)

    def _hit(self, limit: str) -> None:
        if self._hits is not None:
            self._hits.labels(limit).inc()

    async def check_rate(self, who: str) -> None:
        if not self.config.rate_per_minute:
            return
        rate = self.config.rate_per_minute
        taken = await self._quotas.take("rate-limit", who, per_second=rate / 60, burst=rate)
        if not taken.admitted:
            self._hit("rate")
            refused = TooManyRequests(f"Too Many Requests: more than {rate} requests a minute")
            refused.headers = {"Retry-After": taken.retry_after_header}
            raise refused

    async def admit_session(self, who: str, session_id: str) -> None:
        if self.config.max_sessions:
            await self._admit_member(
                "sessions", who, session_id, self.config.session_ttl, self.config.max_sessions, "sessions"
            )

    async def admit_stream(self, who: str, member: str) -> None:
        """Also called to refresh an open stream's entry (keep-alive ticks)."""
        if self.config.max_streams:
            await self._admit_member(
                "streams", who, member, self.config.stream_ttl, self.config.max_streams, "open streams"
            )

    async def release(self, kind: str, who: str, member: str) -> None:
        if (kind == "sessions" and self.config.max_sessions) or (kind == "streams" and self.config.max_streams):
            with translated():
                await self._redis.zrem(self._keys.limit(kind, who), member)

    async def _admit_member(self, kind: str, who: str, member: str, ttl: float, limit: int, what: str) -> None:
        now = time.time()
        with translated():
            admitted = int(
                await self._admit(
                    keys=[self._keys.limit(kind, who)],
                    args=[now, member, now + ttl, limit, int(ttl * 1000) + 1000],
                )
            )
        if not admitted:
            self._hit(kind)
            raise TooManyRequests(f"Too Many Requests: more than {limit} {what} for this client")
