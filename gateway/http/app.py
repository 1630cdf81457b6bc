"""The ASGI app: the lifespan, where every IO client is created, wired and closed; the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from gateway import errors
from gateway.caching.service import ResponseCache
from gateway.caching.watcher import Watcher
from gateway.config import Settings
from gateway.eras.idempotent import Idempotency
from gateway.eras.legacy_sse import install as install_legacy_sse
from gateway.eras.replays import Replays
from gateway.eras.sessionful import SessionfulEndpoint
from gateway.eras.stateless import StatelessEndpoint
from gateway.http.auth import METADATA_PATH, Authenticator
from gateway.http.gateway import Gateway
from gateway.http.guard import Guard
from gateway.http.jwks import JwksCache
from gateway.http.refusals import DrainRefusedBodies
from gateway.http.routes import (
    MCP_METHODS,
    GatewayApp,
    healthz,
    mcp_endpoint,
    protected_resource,
    readyz,
)
from gateway.http.scrape import MetricsListener
from gateway.metrics import Metrics
from gateway.specs import csv
from gateway.store.claims import Claims
from gateway.store.client import Redis, connect
from gateway.store.eventlog import EventLog
from gateway.store.idempotency import IdempotencyStore
from gateway.store.keys import Keys
from gateway.store.limits import LimitConfig, Limiter
from gateway.store.responses import ResponseStore
from gateway.store.sessions import SessionStore
from gateway.streams.liveness import Liveness
from gateway.streams.pump import PumpConfig
from gateway.streams.relay import Relay, RelayConfig
from gateway.streams.tail import Tail
from gateway.supervisor import Supervisor
from gateway.tasks.config import TaskTools, parse_task_tools
from gateway.tasks.passthrough import TaskRoutes
from gateway.tasks.runner import Runner
from gateway.tasks.service import TaskService, TaskSettings
from gateway.tasks.store import TaskStore
from gateway.timers import CoarseTimers
from gateway.tracing.api import NOOP, Tracer
from gateway.tracing.setup import plan as plan_tracing
from gateway.upstream.affinity import Affinity
from gateway.upstream.client import HeaderPolicy, UpstreamClient, new_http_session, new_upstream_pool
from gateway.upstream.labels import pool_of
from gateway.upstream.pools import HealthChecker, Pools
from gateway.upstream.probes import Prober
from gateway.wire.caching import MAX_TTL_MS

log = logging.getLogger("gateway.http.app")

LIVENESS_CHECK = 0.2  # s between checks of the replicas holding watched streams (kill -> takeover)


def create_app(settings: Settings, *, on_started: Callable[[], None] | None = None) -> GatewayApp:
    """`on_started`: called once the lifespan has built everything (the process owner's tuning hook)."""
    metrics = Metrics()
    pools = Pools(settings.pools(), gauge=metrics.upstream_healthy)  # invalid upstream config fails here
    pool_headers = settings.pool_headers()
    probe_specs = settings.probes()
    # bad --task-tools / --task-sync-input fail here, at start-up
    task_tools = parse_task_tools(settings.task_tools, pools.names(), settings.task_sync_input)
    tracing = plan_tracing(os.environ)  # the standard OTEL_* variables; an unsupported protocol fails here

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        scrape = None
        if settings.metrics_port:  # /metrics on its own listener, never the MCP port (docs/hardening.md)
            scrape = MetricsListener(
                metrics.render, host=settings.metrics_host, port=settings.metrics_port, reuse_port=settings.workers > 1
            )
            await scrape.start()

        def store(max_connections: int, name: str) -> Redis:
            return connect(
                settings.redis_url,
                max_connections=max_connections,
                cluster=settings.redis_cluster,
                sentinels=settings.sentinels(),
                sentinel_master=settings.redis_sentinel_master,
                client_name=name,
            )

        tracer = tracing.build(replica) if tracing is not None else NOOP
        redis = store(settings.redis_max_connections, f"mcpgw:{replica}")
        http = new_http_session(connect_timeout=settings.connect_timeout, pool_size=settings.upstream_pool_size)
        supervisor = Supervisor()
        keys = Keys(settings.key_prefix)
        sessions = SessionStore(redis, keys, settings.session_ttl)
        event_log = EventLog(
            redis, keys, maxlen=settings.stream_maxlen, ttl=settings.session_ttl, retention=settings.stream_retention
        )
        # The heartbeat has its own connections: a burst that drains the command pool must not make
        # this replica look dead (its streams would be taken over while it is fine).
        control = (
            redis  # the embedded store is this process: nothing to starve
            if settings.embedded_store
            else store(2, f"mcpgw:{replica}:control")  # per node on a Cluster
        )
        liveness = Liveness(
            control,
            keys,
            replica,
            ttl=settings.lease_ttl,
            interval=settings.lease_ttl / 5,
            on_lapse=lambda: lapsed(),  # bound late: the relay is built below
        )

        async def lapsed() -> None:
            metrics.liveness_lapses.inc()
            await relay.verify_leases()

        tail = Tail(redis, keys, event_log, liveness, check_interval=min(LIVENESS_CHECK, settings.lease_ttl / 5))
        await tail.start()  # presence first: from now on a kill of this process is seen at once
        metrics.tail_watches.set_function(lambda: len(tail))
        await liveness.beat()
        timers = CoarseTimers(asyncio.get_running_loop())  # the long waits of idle streams
        upstream_pool = new_upstream_pool(
            connect_timeout=settings.connect_timeout,
            pool_size=settings.upstream_pool_size,
            timers=timers,
            acquire_timeout=settings.upstream_acquire_timeout,
        )
        metrics.upstream_connections.set_function(upstream_pool.open_connections)
        upstream = UpstreamClient(
            upstream_pool,
            request_timeout=settings.request_timeout,
            latency=metrics.upstream_latency,
            tracer=tracer,
            pool_of=pool_of((p, pools.get(p).instances) for p in pools.names()),
        )
        health = HealthChecker(pools, Prober(http, timeout=settings.health_timeout), probe_specs)
        await health.check_all()  # a fresh replica knows which instances are up before it serves
        supervisor.spawn(health.run(), name="health-checks")
        limiter = Limiter(
            redis,
            keys,
            LimitConfig(
                rate_per_minute=settings.rate_limit,
                max_sessions=settings.max_sessions_per_client,
                max_streams=settings.max_streams_per_client,
                session_ttl=settings.session_ttl,
                stream_ttl=max(30.0, settings.keepalive_interval * 2),
            ),
            hits=metrics.limits_hit,
        )
        authenticator = (
            Authenticator(
                issuer=settings.auth_issuer,
                audience=settings.audience or "",  # Settings refuses auth without one
                resource=settings.resource or "",
                jwks=(
                    JwksCache(settings.auth_jwks_url, http, supervisor, min_refresh=settings.jwks_min_refresh)
                    if settings.auth_jwks_url
                    else None
                ),
                public_key=settings.auth_public_key,
                algorithms=csv(settings.auth_algorithms),
            )
            if settings.auth_issuer
            else None
        )
        header_policy = HeaderPolicy(drop_authorization=authenticator is not None, per_pool=pool_headers)
        affinity = Affinity(
            pools=pools,
            sessions=sessions,
            upstream=upstream,
            redis=redis,
            keys=keys,
            max_body=settings.max_body_bytes,
        )
        relay = Relay(
            log_=event_log,
            sessions=sessions,
            upstream=upstream,
            supervisor=supervisor,
            metrics=metrics,
            config=RelayConfig(
                keepalive=settings.keepalive_interval,
                retry_ms=settings.retry_ms,
                pump=PumpConfig(
                    idle_timeout=settings.stream_idle_timeout,
                    max_line=settings.sse_max_line,
                    abandon_after=settings.stream_abandon_timeout,
                ),
                replay_limit=settings.stream_maxlen * 2,
            ),
            replica=replica,
            tail=tail,
            tracer=tracer,
            timers=timers,
        )
        idempotency = Idempotency(
            IdempotencyStore(redis, keys, ttl=settings.idempotency_ttl),
            max_response=settings.idempotency_max_response_bytes,
        )
        claims = Claims(
            redis,
            keys,
            ttl=settings.session_ttl,
            max_requests=settings.replay_max_requests,
            max_answer=settings.replay_max_answer_bytes,
            renewals=sessions.renewals,
        )
        supervisor.spawn(liveness.run(), name="liveness")
        supervisor.spawn(tail.run(), name="tail")
        tasks = _task_service(settings, task_tools, redis, keys, upstream, supervisor, liveness, metrics, tracer)
        cache = None
        if settings.response_cache:
            cache = ResponseCache(
                ResponseStore(redis, keys, max_ttl_ms=MAX_TTL_MS),
                metrics,
                max_bytes=settings.response_cache_max_bytes,
                max_line=settings.sse_max_line,
                in_use=lambda pool, uri: watcher.watch(pool, uri),  # bound late: the watcher needs the cache
            )
            # one subscriptions/listen per instance of a pool in use: list changes drop cached lists
            watcher = Watcher(
                pools=pools,
                upstream=upstream,
                headers=header_policy,
                cache=cache,
                supervisor=supervisor,
                max_line=settings.sse_max_line,
            )
        app.state.gateway = Gateway(
            settings=settings,
            pools=pools,
            metrics=metrics,
            redis=redis,
            relay=relay,
            sessionful=SessionfulEndpoint(
                pools=pools,
                sessions=sessions,
                log_=event_log,
                relay=relay,
                upstream=upstream,
                affinity=affinity,
                metrics=metrics,
                headers=header_policy,
                limiter=limiter,
                max_body=settings.max_body_bytes,
                max_batch=settings.max_batch,
                claims=claims,
                replays=Replays(claims, event_log, liveness, wait=settings.request_timeout),
                idempotency=idempotency,
                replica=replica,
            ),
            stateless=StatelessEndpoint(
                pools=pools,
                upstream=upstream,
                headers=header_policy,
                max_body=settings.max_body_bytes,
                idempotency=idempotency,
                tasks=tasks,
                routes=TaskRoutes(
                    redis, keys, default_ttl_ms=int(settings.task_ttl * 1000), max_line=settings.sse_max_line
                ),
                cache=cache,
            ),
            guard=Guard(
                origins=settings.origin_list(),
                limiter=limiter,
                authenticator=authenticator,
                resource=settings.resource,
                authorization_servers=list(csv(settings.authorization_servers)),
                max_header_bytes=settings.max_header_bytes,
                trust_forwarded_for=settings.trust_forwarded_for,
            ),
            supervisor=supervisor,
            keys=keys,
            loop=asyncio.get_running_loop(),
            tracer=tracer,
        )
        log.info(
            "gateway up: pools %s, health probes %s",
            {p: list(pools.get(p).instances) for p in pools.names()},
            {p: f"{spec.describe()} every {spec.interval:g} s" for p, spec in probe_specs.items()},
        )
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            gateway: Gateway = app.state.gateway
            gateway._drain()
            # Drain keeps pumping: streams that end before the deadline lose nothing, resumable
            # upstream or not; the rest are released (and adopted elsewhere) at the deadline.
            started = gateway.drain_started if gateway.drain_started is not None else gateway.loop.time()
            await relay.finish_pumps(settings.drain_timeout - (gateway.loop.time() - started))
            await supervisor.aclose()  # liveness, tail, health checks, task runners (they fail their tasks)
            with contextlib.suppress(errors.StoreError):
                await liveness.clear()
            await tail.aclose()
            await upstream_pool.close()
            await http.close()
            if control is not redis:
                await control.aclose()
            await redis.aclose()
            if scrape is not None:
                await scrape.aclose()
            await asyncio.to_thread(tracer.shutdown)  # flush the spans still batched

    app = GatewayApp(lifespan=lifespan, refusal_drain_bytes=settings.refusal_drain_bytes)
    # GET/POST/DELETE on these two are served by GatewayApp.__call__ before routing.
    app.add_route("/mcp", mcp_endpoint, methods=list(MCP_METHODS))
    app.add_route("/mcp/{pool}", mcp_endpoint, methods=list(MCP_METHODS))
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.add_route(METADATA_PATH, protected_resource, methods=["GET"])
    app.add_route(METADATA_PATH + "/{path:path}", protected_resource, methods=["GET"])
    install_legacy_sse(app)  # 2024-11-05 HTTP+SSE clients: GET /sse, POST /messages
    # Refusals sent before the body is read reach a client that is still uploading.
    app.add_middleware(DrainRefusedBodies, limit=settings.refusal_drain_bytes)
    return app




def _task_service(
    settings: Settings,
    tools: TaskTools,
    redis: Redis,
    keys: Keys,
    upstream: UpstreamClient,
    supervisor: Supervisor,
    liveness: Liveness,
    metrics: Metrics,
    tracer: Tracer,
) -> TaskService | None:
    """Gateway-served tasks, when some pool has `--task-tools` (else no task records)."""
    if not tools.pools:
        return None
    store = TaskStore(redis, keys)
    runner = Runner(
        store=store,
        upstream=upstream,
        supervisor=supervisor,
        replica_id=liveness.replica_id,
        max_body=settings.max_body_bytes,
        max_line=settings.sse_max_line,
        metrics=metrics,
        tracer=tracer,
    )
    return TaskService(
        tools=tools,
        store=store,
        runner=runner,
        liveness=liveness,
        settings=TaskSettings(ttl_ms=int(settings.task_ttl * 1000), poll_ms=settings.task_poll_interval),
        metrics=metrics,
    )
