"""Every retry policy of the gateway, in one place (tenacity).

Retries happen only where a request provably did not reach the upstream (the connection was
refused before anything was sent) or is idempotent (a store read, a lease renewal, a GET that
re-opens a stream with Last-Event-ID). Policies are data: (what to retry, attempts, backoff).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.errors import GatewayError, StoreBusy, StoreError, UpstreamUnavailable


def _policy(retry_on: type[GatewayError], attempts: int, first_wait: float, max_wait: float) -> AsyncRetrying:
    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=first_wait, max=max_wait),
        reraise=True,
    )


T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    """A policy as data, for calls that almost always work the first time: `run` makes the first
    attempt without tenacity (an AsyncRetrying is costly to build and iterate: docs/decisions/0010), then
    the waits and attempts `_policy` would give (first_wait, 2x, 4x, ... up to max_wait)."""

    retry_on: type[GatewayError]
    attempts: int
    first_wait: float
    max_wait: float

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except self.retry_on:
            if self.attempts <= 1:
                raise
        await asyncio.sleep(min(self.first_wait, self.max_wait))
        async for attempt in _policy(self.retry_on, self.attempts - 1, 2 * self.first_wait, self.max_wait):
            with attempt:
                return await call()
        raise AssertionError("unreachable")  # pragma: no cover  # reraise=True: the last error is raised


def upstream_connect(attempts: int = 3) -> AsyncRetrying:
    """Connection refused / no route: nothing reached the upstream, so trying again is safe."""
    return _policy(UpstreamUnavailable, attempts, 0.05, 0.5)


def store(attempts: int = 3) -> AsyncRetrying:
    """Idempotent store reads and lease renewals survive a blip (e.g. a failover)."""
    return _policy(StoreError, attempts, 0.05, 0.4)


def store_handover(attempts: int = 15) -> AsyncRetrying:
    """Releasing a pump's lease outlasts a store failover (~10 s in all): while the lease names a
    live replica no other one adopts the stream, so a pump stopped by a store error must hand
    over once the store is back. The release compares the lease's value, so repeating it is safe."""
    return _policy(StoreError, attempts, 0.1, 1.0)


def store_busy(attempts: int = 4) -> Policy:
    """The pool had no free connection (nothing was sent): any command, even an append, may be
    tried again; a pump or an open delivery waits out an overload instead of giving up its stream."""
    return Policy(StoreBusy, attempts, 0.1, 1.0)


def upstream_resume(attempts: int = 5) -> AsyncRetrying:
    """Re-opening an upstream stream with Last-Event-ID is idempotent (GET)."""
    return _policy(UpstreamUnavailable, attempts, 0.1, 1.0)


def redis_client() -> Retry:
    """Inside redis-py: a command that failed with a connection error or timeout is sent again
    (a Cluster client re-reads the slot map first), so a blip of a few hundred ms is hidden; a
    longer outage (a failover) surfaces as StoreError, a 503 with Retry-After, instead of holding
    requests for seconds (redis-py's default is 10 attempts, which would make this invisible)."""
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.4), retries=3)


def sentinel_query() -> Retry:
    """A question to one Sentinel is asked once: the next Sentinel is asked at once, and the primary's
    connection (`redis_client`) repeats the whole discovery. redis-py's default (3 retries, backoff
    up to 10 s, nested inside the primary's retries) held a request ~17 s when no Sentinel answered."""
    return Retry(NoBackoff(), retries=0)


def cache_watch_delay(failures: int) -> float:
    """A response-cache watch (`subscriptions/listen` to an upstream) that ended is re-opened after
    this many seconds: 0.5 s after a stream that was acknowledged, doubling per failed attempt up
    to 30 s (an upstream without `subscriptions/listen` is asked twice a minute)."""
    return min(30.0, 0.5 * 2.0**failures)
