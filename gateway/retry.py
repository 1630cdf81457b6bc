"""Every retry policy of the gateway, in one place (tenacity).

Retries happen only where a request provably did not reach the upstream (the connection was
refused before anything was sent) or is idempotent (a store read, a lease renewal, a GET that
re-opens a stream with Last-Event-ID). Policies are data: (what to retry, attempts, backoff).
"""

from __future__ import annotations

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.errors import GatewayError, StoreBusy, StoreError, UpstreamUnavailable


def _policy(retry_on: type[GatewayError], attempts: int, first_wait: float, max_wait: float) -> AsyncRetrying:
    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=first_wait, max=max_wait),
        reraise=True,
    )


def upstream_connect(attempts: int = 3) -> AsyncRetrying:
    """Connection refused / no route: nothing reached the upstream, so trying again is safe."""
    return _policy(UpstreamUnavailable, attempts, 0.05, 0.5)


def store(attempts: int = 3) -> AsyncRetrying:
    """Idempotent store reads and lease renewals survive a blip (e.g. a failover)."""
    return _policy(StoreError, attempts, 0.05, 0.4)


def store_busy(attempts: int = 4) -> AsyncRetrying:
    """The pool had no free connection (nothing was sent): any command, even an append, may be
    tried again; a pump or an open delivery waits out an overload instead of giving up its stream."""
    return _policy(StoreBusy, attempts, 0.1, 1.0)


def upstream_resume(attempts: int = 5) -> AsyncRetrying:
    """Re-opening an upstream stream with Last-Event-ID is idempotent (GET)."""
    return _policy(UpstreamUnavailable, attempts, 0.1, 1.0)
