"""Prometheus metrics, one registry per app instance (no global state).

`deploy/grafana/mcp-gateway.json` and `deploy/prometheus/alerts.yaml` use these names; a test
checks that every name they use is served by `/metrics`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.wire import belonging

# `reason` of mcpgw_takeovers_total: streams.liveness (a holder judged dead) and streams.tail (a
# lease naming nobody, or this replica); tests/test_takeover_reasons.py keeps them in step.
TAKEOVER_REASONS = ("liveness_expired", "presence_vanished", "replica_gone", "handed_over", "orphaned_here")


class CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "created", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: +Inf
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # `le` is inclusive: value <= bound
        self.total += value


ChildT = TypeVar("ChildT", CounterChild, HistogramChild)


class _Labelled(Collector, Generic[ChildT]):
    """A labelled metric of the request path, read by the registry when scraped. prometheus_client's
    own takes a lock and makes several Python calls per update, three updates per JSON call
    (docs/decisions/0010); this one is a list or float update. One event loop updates
    and scrapes it: no lock is needed (never update these from another thread)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], ChildT] = {}
        registry.register(self)

    def labels(self, *values: str) -> ChildT:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
        return child

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def describe(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        yield from self._families(with_samples=False)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        yield from self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        raise NotImplementedError


class FastCounter(_Labelled[CounterChild]):
    """`Counter(name, doc, labelnames)` for `labels(...).inc()` on the request path."""

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def _families(self, *, with_samples: bool) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if with_samples:
            for values, child in self._children.items():
                family.add_metric(list(values), child.value, created=child.created)
        yield family


class FastHistogram(_Labelled[HistogramChild]):
    """`Histogram(name, doc, labelnames, buckets)` for `labels(...).observe(v)` on the request path."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._les: tuple[str, ...] = tuple(floatToGoString(b) for b in (*self.bounds, float("inf")))  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _families(self, *, with_samples: bool) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        if with_samples:
            for values, child in self._children.items():
                cumulative, buckets = 0, []
                for le, count in zip(self._les, child.counts, strict=True):
                    cumulative += count
                    buckets.append((le, cumulative))
                family.add_metric(list(values), buckets, child.total)
                # prometheus_client's Histogram also serves `<name>_created` per label set
                family.samples.append(family.samples[-1]._replace(name=f"{self.name}_created", value=child.created))
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = FastCounter(
            "mcpgw_requests_total", "HTTP requests on MCP endpoints", ["method", "status", "era"], registry=r
        )
        self.sessions_created = Counter("mcpgw_sessions_created_total", "Gateway sessions created", registry=r)
        self.sessions_deleted = Counter("mcpgw_sessions_deleted_total", "Gateway sessions deleted", registry=r)
        self.active_pumps = Gauge("mcpgw_active_pumps", "Streams this replica pumps now", registry=r)
        self.active_deliveries = Gauge("mcpgw_active_deliveries", "Open client SSE connections", registry=r)
        self.upstream_connections = Gauge(
            "mcpgw_upstream_connections",
            "Upstream connections this replica holds open (an open stream holds one)",
            registry=r,
        )
        self.events_relayed = Counter("mcpgw_events_relayed_total", "SSE events delivered to clients", registry=r)
        self.resumes = Counter("mcpgw_resumes_total", "Resumes with Last-Event-ID", registry=r)
        # Kept beside the reasons for the dashboards and alerts that already read it.
        self.takeovers = Counter("mcpgw_lease_takeovers_total", "Pumps taken over from a dead replica", registry=r)
        self.takeovers_by_reason = Counter(
            "mcpgw_takeovers_total", "Pumps taken over, by why the holder was judged gone", ["reason"], registry=r
        )
        for reason in TAKEOVER_REASONS:  # every reason served from the start: alerts see 0, not nothing
            self.takeovers_by_reason.labels(reason)
        self.started = Gauge("mcpgw_replica_start_time_seconds", "When this replica process started", registry=r)
        self.started.set(time.time())
        self.gaps = Counter("mcpgw_stream_gaps_total", "Resumes that found lost events", registry=r)
        self.replay_dropped = Counter(
            "mcpgw_upstream_replay_dropped_total",
            "Messages a re-opened upstream stream replayed that were not that stream's (not relayed)",
            ["reason"],
            registry=r,
        )
        for reason in belonging.REASONS:  # served at 0 from the start: a rate over it needs a first sample
            self.replay_dropped.labels(reason)
        self.tasks = Counter(
            "mcpgw_tasks_total",
            "Gateway-served tasks by event (created, completed, failed, cancelled, orphaned, adopted)",
            ["event"],
            registry=r,
        )
        self.replays = Counter(
            "mcpgw_replayed_requests_total", "Repeats of a request id answered from the first copy", registry=r
        )
        self.store_errors = Counter("mcpgw_store_errors_total", "Redis failures", registry=r)
        self.request_duration = FastHistogram(
            "mcpgw_request_duration_seconds",
            "MCP endpoint requests: time to the response's start (an SSE answer: to its headers)",
            ["era", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.upstream_healthy = Gauge(
            "mcpgw_upstream_healthy",
            "1 while this replica places sessions on the upstream instance",
            ["pool", "upstream"],  # not "instance": Prometheus sets that to the scraped replica
            registry=r,
        )
        self.limits_hit = Counter(
            "mcpgw_limits_hit_total",
            "Requests refused by a limit (rate, sessions, streams, size, headers)",
            ["limit"],
            registry=r,
        )
        self.tail_watches = Gauge(
            "mcpgw_tail_watches", "Streams delivered here but pumped elsewhere (tail subscriptions)", registry=r
        )
        self.liveness_lapses = Counter(
            "mcpgw_liveness_lapses_total", "Heartbeats that found this replica's liveness key expired", registry=r
        )
        self.cache_hits = Counter(
            "mcpgw_response_cache_hits_total", "Requests answered from the response cache", ["method"], registry=r
        )
        self.cache_misses = Counter(
            "mcpgw_response_cache_misses_total",
            "Cacheable requests the response cache could not answer (sent upstream)",
            ["method"],
            registry=r,
        )
        self.cache_stores = Counter(
            "mcpgw_response_cache_stores_total", "Upstream answers kept by the response cache", ["method"], registry=r
        )
        self.cache_invalidations = Counter(
            "mcpgw_response_cache_invalidations_total",
            "Cache families made stale by an upstream notification (or a re-opened watch)",
            ["notification"],
            registry=r,
        )
        self.bridged = Counter(
            "mcpgw_bridged_requests_total",
            "Requests bridged between protocol eras, by direction (client era to upstream era)",
            ["direction"],
            registry=r,
        )
        self.upstream_latency = FastHistogram(
            "mcpgw_upstream_latency_seconds",
            "Time to upstream response headers",
            ["pool"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

    def took_over(self, reason: str) -> None:
        self.takeovers.inc()
        self.takeovers_by_reason.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
