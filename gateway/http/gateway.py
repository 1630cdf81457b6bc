"""The per-process bundle every request handler reads: built once in the lifespan (`app.py`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.trail import AuditTrail
from gateway.bridging.onto_2026.endpoint import Onto2026
from gateway.config import Settings
from gateway.eras.sessionful import SessionfulEndpoint
from gateway.eras.stateless import StatelessEndpoint
from gateway.http.guard import Guard
from gateway.metrics import Metrics
from gateway.store.client import Redis
from gateway.store.keys import Keys
from gateway.streams.relay import Relay
from gateway.supervisor import Supervisor
from gateway.tracing.api import NOOP, Tracer
from gateway.upstream.pools import Pools
from gateway.virtual.endpoint import VirtualEndpoint

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """Everything a request needs, built once per process in the lifespan."""

    settings: Settings
    pools: Pools
    metrics: Metrics
    redis: Redis
    relay: Relay
    sessionful: SessionfulEndpoint
    stateless: StatelessEndpoint
    guard: Guard
    supervisor: Supervisor
    keys: Keys
    loop: asyncio.AbstractEventLoop
    tracer: Tracer = NOOP
    onto_2026: Onto2026 | None = None  # 2025-era clients of pools pinned to a 2026-07-28 upstream
    virtual: VirtualEndpoint | None = None  # `--virtual-server`s, served at /mcp/NAME
    audit: AuditTrail | None = None
    drain_started: float | None = None
    _request_counters: dict[tuple[str, int, str], Any] = field(default_factory=dict)

    def count_request(self, method: str, status: int, era: str, seconds: float) -> None:
        """Count the request and its duration; labelled children are looked up once per label set."""
        key = (method, status, era)
        children = self._request_counters.get(key)
        if children is None:
            children = self._request_counters[key] = (
                self.metrics.requests.labels(method, str(status), era),
                self.metrics.request_duration.labels(era, str(status)),
            )
        children[0].inc()
        children[1].observe(seconds)

    def start_drain(self) -> None:
        """Called from the signal handler: readiness goes 503, open SSE connections end."""
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        if not self.relay.draining.is_set():
            log.info("draining: readiness off, closing SSE connections with a retry hint; pumps keep writing")
            self.drain_started = self.loop.time()
            self.relay.draining.set()
            self.relay.wake_all()
