"""The Redis connection: created once in the app lifespan, passed to whoever needs it.

With no Redis URL the gateway runs on an embedded in-process store (fakeredis, with Lua),
which behaves like Redis for one process only; `connect` says so loudly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fakeredis
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from gateway.errors import StoreError

log = logging.getLogger("gateway.store.client")

Redis = aioredis.Redis


def connect(
    redis_url: str | None, *, max_connections: int = 64, pool_timeout: float = 5.0, client_name: str | None = None
) -> Redis:
    """`client_name` names every connection (`CLIENT LIST` shows which replica holds which)."""
    if redis_url:
        # A blocking pool: a burst beyond `max_connections` waits for a free connection (up to
        # `pool_timeout`, then StoreError) instead of failing at once with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=max_connections,
            timeout=pool_timeout,
            health_check_interval=30,
            socket_keepalive=True,
            client_name=client_name,
        )
        client: Redis = aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool
        return client
    log.warning(
        "no --redis-url given: using the EMBEDDED in-process store; sessions and streams live in "
        "this process only, so run exactly one replica (set MCPGW_REDIS_URL to scale out)"
    )
    embedded: Any = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return embedded  # type: ignore[no-any-return]


@contextmanager
def translated() -> Iterator[None]:
    """Translate redis-py (and fakeredis) failures into the gateway's StoreError."""
    try:
        yield
    except redis_exceptions.RedisError as exc:
        raise StoreError(f"session store unavailable: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"session store unavailable: {exc}") from exc
