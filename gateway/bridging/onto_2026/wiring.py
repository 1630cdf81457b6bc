"""The bridge's builder, for the composition root (`http/endpoints.py`): None when no pool is
pinned to a 2026-07-28 upstream (then nothing of the bridge is on the request path)."""

from __future__ import annotations

from gateway.bridging.onto_2026.answers import Answers
from gateway.bridging.onto_2026.calls import Caller, ToolHeaders
from gateway.bridging.onto_2026.endpoint import Onto2026
from gateway.bridging.onto_2026.listen import Subscriptions
from gateway.bridging.onto_2026.pins import EraPins, parse_pins
from gateway.config import Settings
from gateway.http.wiring import StoreSide, StreamSide
from gateway.metrics import Metrics
from gateway.replay.replays import Replays
from gateway.tracing.api import Tracer
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.upstream.pools import Pools

LISTEN_CHECK = 1.0  # s between looks at a session's subscriptions by the replica serving its GET stream


def build_onto_2026(
    settings: Settings,
    pools: Pools,
    store: StoreSide,
    upstream: UpstreamClient,
    streams: StreamSide,
    replica: str,
    headers: HeaderPolicy,
    metrics: Metrics,
    tracer: Tracer,
) -> Onto2026 | None:
    pins = EraPins(parse_pins(settings.upstream_era))
    if not pins.any_modern():
        return None
    # The client has half the stream's idle bound to answer a round of input requests: the pump
    # that logs the stream gives up at the whole bound.
    input_timeout = settings.stream_idle_timeout / 2
    return Onto2026(
        pins=pins,
        pools=pools,
        sessions=store.sessions,
        relay=streams.relay,
        log_=store.event_log,
        claims=store.claims,
        replays=Replays(store.claims, store.event_log, streams.liveness, wait=settings.request_timeout),
        idempotency=store.idempotency,
        replica=replica,
        caller=Caller(upstream, ToolHeaders(), settings.max_body_bytes),
        answers=Answers(store.redis, store.keys, ttl=settings.stream_idle_timeout),
        subscriptions=Subscriptions(store.redis, store.keys, ttl=settings.session_ttl),
        headers=headers,
        limiter=store.limiter,
        metrics=metrics,
        max_body=settings.max_body_bytes,
        max_batch=settings.max_batch,
        max_line=settings.sse_max_line,
        input_timeout=input_timeout,
        listen_check=LISTEN_CHECK,
        tracer=tracer,
    )
