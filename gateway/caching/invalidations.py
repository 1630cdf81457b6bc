"""Invalidation of cached answers: a family's generation bumped, so its entries are stale everywhere.

Its own object so that the watcher (which invalidates) and the cache (which tells the watcher what is
in use) can be built one after the other, without either needing the other first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from gateway import errors
from gateway.metrics import Metrics
from gateway.store.responses import ResponseStore

log = logging.getLogger("gateway.caching")


class Invalidator(Protocol):
    async def invalidate(self, pool: str, families: Iterable[str], reason: str) -> None: ...


class Invalidations:
    def __init__(self, store: ResponseStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def invalidate(self, pool: str, families: Iterable[str], reason: str) -> None:
        """Bump each family's generation: its entries are stale on every replica from now on."""
        for family in families:
            try:
                await self._store.bump(pool, family)
            except errors.StoreError as exc:
                self._metrics.store_errors.inc()
                log.warning("response cache invalidation of %s/%s failed: %s", pool, family, exc)
                continue
            self._metrics.cache_invalidations.labels(reason).inc()
