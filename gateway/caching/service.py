"""The response cache on the request path: look up before the upstream, keep its answer after.

A lookup tries the caller's private entry first (when the caller is known: its principal, or a
digest of the credentials it sends upstream), then the public one. A miss remembers the family's
generation; the upstream's answer (JSON, or the response event of an SSE answer, kept as it goes
by) is stored under the scope the answer names, only if it is a complete success with ttlMs > 0.
Store failures never fail a request: a lookup that cannot reach Redis is a miss, and nothing is kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.caching.invalidations import Invalidations
from gateway.metrics import Metrics
from gateway.store.responses import Hit, ResponseStore
from gateway.wire import caching, sse

log = logging.getLogger("gateway.caching")

PUBLIC = "public"


@dataclass(frozen=True)
class Pending:
    """A cacheable request that missed: where its answer goes, and the generation it must still be."""

    pool: str
    question: caching.Question
    partition: str | None
    generation: str


class ResponseCache:
    def __init__(
        self,
        store: ResponseStore,
        metrics: Metrics,
        *,
        max_bytes: int,
        max_line: int,
        in_use: Callable[[str, str | None], None] = lambda pool, uri: None,
        invalidations: Invalidations | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._max_line = max_line
        self._invalidations = invalidations or Invalidations(store, metrics)
        self._in_use = in_use  # told of each pool (and read URI) whose entries this replica serves or keeps
        for method in caching.CACHEABLE_METHODS:  # zeros from the start: dashboards show 0, not "no data"
            for counter in (metrics.cache_hits, metrics.cache_misses, metrics.cache_stores):
                counter.labels(method)
        for reason in (*caching.LIST_CHANGED, caching.RESOURCE_UPDATED, caching.ACKNOWLEDGED):
            metrics.cache_invalidations.labels(reason)

    @staticmethod
    def _entry(question: caching.Question, partition: str | None) -> str:
        return f"{question.digest}:{partition or PUBLIC}"

    async def lookup(
        self,
        pool: str,
        method: str | None,
        params: Mapping[str, Any],
        partition: str | None,
        asked: caching.Directives | None = None,
    ) -> tuple[Hit | None, Pending | None]:
        """(a fresh cached result, None), or (None, where to keep the answer); (None, None): not cacheable."""
        question = caching.question(method, params)
        if question is None:
            return None, None
        asked = asked or caching.Directives()
        if not asked.may_store and not asked.use_stored:
            return None, None  # the client wants nothing of the cache
        # caching §Cache Scope: a private entry is reused only within its authorization context.
        digests = [self._entry(question, partition)] if partition is not None else []
        digests.append(self._entry(question, None))
        if not asked.use_stored:
            digests = []  # a refresh: only the generation, so that the fresh answer is kept
        try:
            found = await self._store.lookup(pool, question.family, digests)
        except errors.StoreError as exc:
            self._metrics.store_errors.inc()
            log.warning("response cache lookup failed (answering from upstream): %s", exc)
            return None, None
        if found.hit is not None:
            self._metrics.cache_hits.labels(question.method).inc()
            self._in_use(pool, question.uri)
            return found.hit, None
        self._metrics.cache_misses.labels(question.method).inc()
        return None, Pending(pool, question, partition, found.generation) if asked.may_store else None

    async def offer_json(self, pending: Pending, payload: bytes, request_id: Any) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if isinstance(message, dict):
            await self._offer(pending, message, request_id)

    async def offer_stream(
        self, pending: Pending, chunks: AsyncIterator[bytes], request_id: Any
    ) -> AsyncIterator[bytes]:
        """Relay an SSE answer; its response event is kept before the chunk carrying it goes on."""
        parser = sse.Parser(self._max_line)
        async for chunk in chunks:
            for message in sse.json_messages(parser, chunk):
                await self._offer(pending, message, request_id)
            yield chunk

    async def _offer(self, pending: Pending, message: Mapping[str, Any], request_id: Any) -> None:
        hint = caching.hint_of(message, request_id)
        if hint is None:
            return
        if hint.scope == "private" and pending.partition is None:
            return  # nobody to keep it for: a private answer is never shared
        body = json.dumps(message["result"], separators=(",", ":")).encode()
        if len(body) > self._max_bytes:
            return
        partition = pending.partition if hint.scope == "private" else None
        question = pending.question
        try:
            stored = await self._store.store(
                pending.pool, question.family, self._entry(question, partition), pending.generation, body, hint.ttl_ms
            )
        except errors.StoreError as exc:
            self._metrics.store_errors.inc()
            log.warning("response cache store failed: %s", exc)
            return
        if stored:
            self._metrics.cache_stores.labels(question.method).inc()
            self._in_use(pending.pool, question.uri)

    async def watch_stream(self, pool: str, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Relay a `subscriptions/listen` stream; its change notifications invalidate as they pass."""
        parser = sse.Parser(self._max_line)
        async for chunk in chunks:
            for message in sse.json_messages(parser, chunk):
                await self.invalidate(pool, caching.invalidated(message), str(message.get("method")))
            yield chunk

    async def invalidate(self, pool: str, families: Iterable[str], reason: str) -> None:
        """Bump each family's generation: its entries are stale on every replica from now on."""
        await self._invalidations.invalidate(pool, families, reason)
