"""Every retry policy of the gateway, in one place (tenacity).

Retries happen only where a request provably did not reach the upstream (the connection was
refused before anything was sent) or is `initialize` (no upstream session exists yet).
"""

from __future__ import annotations

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from gateway.errors import StoreError, UpstreamUnavailable


def upstream_connect(attempts: int = 3) -> AsyncRetrying:
    """Connection refused / no route: nothing reached the upstream, so trying again is safe."""
    return AsyncRetrying(
        retry=retry_if_exception_type(UpstreamUnavailable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.05, max=0.5),
        reraise=True,
    )


def store(attempts: int = 3) -> AsyncRetrying:
    """Idempotent store reads and lease renewals survive a blip (e.g. a failover)."""
    return AsyncRetrying(
        retry=retry_if_exception_type(StoreError),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.05, max=0.4),
        reraise=True,
    )


def upstream_resume(attempts: int = 5) -> AsyncRetrying:
    """Re-opening an upstream stream with Last-Event-ID is idempotent (GET)."""
    return AsyncRetrying(
        retry=retry_if_exception_type(UpstreamUnavailable),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    )
