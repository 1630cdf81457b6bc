"""Prometheus metrics, one registry per app instance (no global state).

`deploy/grafana/mcp-gateway.json` and `deploy/prometheus/alerts.yaml` use these names; a test
checks that every name they use is served by `/metrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mcpgw_requests_total", "HTTP requests on MCP endpoints", ["method", "status", "era"], registry=r
        )
        self.sessions_created = Counter("mcpgw_sessions_created_total", "Gateway sessions created", registry=r)
        self.sessions_deleted = Counter("mcpgw_sessions_deleted_total", "Gateway sessions deleted", registry=r)
        self.active_pumps = Gauge("mcpgw_active_pumps", "Streams this replica pumps now", registry=r)
        self.active_deliveries = Gauge("mcpgw_active_deliveries", "Open client SSE connections", registry=r)
        self.events_relayed = Counter("mcpgw_events_relayed_total", "SSE events delivered to clients", registry=r)
        self.resumes = Counter("mcpgw_resumes_total", "Resumes with Last-Event-ID", registry=r)
        self.takeovers = Counter("mcpgw_lease_takeovers_total", "Pumps taken over from a dead replica", registry=r)
        self.gaps = Counter("mcpgw_stream_gaps_total", "Resumes that found lost events", registry=r)
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
        self.request_duration = Histogram(
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
        self.upstream_latency = Histogram(
            "mcpgw_upstream_latency_seconds",
            "Time to upstream response headers",
            ["pool"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
