"""gateway.metrics: the request path's lock-free counter and histogram serve what
prometheus_client's own would, byte for byte (their `_created` timestamps aside)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.metrics import FastCounter, FastHistogram, Metrics


def exposition(registry: CollectorRegistry) -> bytes:
    return re.sub(rb"(_created\{[^}]*\}) [0-9.e+]+", rb"\1 T", generate_latest(registry))


def test_fast_metrics_serve_what_prometheus_clients_serve() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.01, 1, 2.5)
    histograms = (
        Histogram("x_seconds", "doc", ["a", "b"], buckets=buckets, registry=theirs),
        FastHistogram("x_seconds", "doc", ["a", "b"], registry=ours, buckets=buckets),
    )
    counters = (
        Counter("y_total", "doc", ["m"], registry=theirs),
        FastCounter("y_total", "doc", ["m"], registry=ours),
    )
    for value in (0.0005, 0.001, 0.002, 0.01, 0.5, 2.5, 3.0, 100.0):  # on bounds too: `le` is inclusive
        for h in histograms:
            h.labels("q", "1").observe(value)
            h.labels("r", "2").observe(value / 10)
    for c in counters:
        c.labels("POST").inc()
        c.labels("POST").inc(2)
        c.labels("GET").inc()
    assert exposition(ours) == exposition(theirs)
    assert b'x_seconds_bucket{a="q",b="1",le="0.001"} 2.0' in exposition(ours)


def test_the_gateway_serves_them_under_their_names() -> None:
    metrics = Metrics()
    metrics.requests.labels("POST", "200", "2025-11-25").inc()
    metrics.request_duration.labels("2025-11-25", "200").observe(0.002)
    metrics.upstream_latency.labels("http://u/mcp").observe(0.001)
    text = metrics.render().decode()
    assert 'mcpgw_requests_total{era="2025-11-25",method="POST",status="200"} 1.0' in text
    assert 'mcpgw_request_duration_seconds_bucket{era="2025-11-25",le="0.0025",status="200"} 1.0' in text
    assert 'mcpgw_upstream_latency_seconds_count{pool="http://u/mcp"} 1.0' in text
