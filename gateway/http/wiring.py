"""The composition root's builders: each side of the gateway built from the settings, as a small bundle.

`app.py`'s lifespan calls them in order (store, upstream, streams, then the endpoints in `endpoints.py`);
each takes what the sides before it built, so nothing is bound late.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from dataclasses import dataclass

import aiohttp

from gateway import errors
from gateway.caching.invalidations import Invalidations
from gateway.caching.service import ResponseCache
from gateway.caching.watcher import Watcher
from gateway.config import Settings
from gateway.config.specs import ProbeSpec, csv
from gateway.metrics import Metrics
from gateway.policy.counters import PolicyCounters
from gateway.policy.source import PolicySource
from gateway.replay.idempotent import Idempotency
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
from gateway.tasks.runner import Runner
from gateway.tasks.service import TaskService, TaskSettings
from gateway.tasks.store import TaskStore
from gateway.timers import CoarseTimers
from gateway.tracing.api import Tracer
from gateway.tracing.setup import TracingPlan
from gateway.tracing.setup import plan as plan_tracing
from gateway.upstream.client import HeaderPolicy, UpstreamClient, new_http_session, new_upstream_pool
from gateway.upstream.http1 import Http1Pool
from gateway.upstream.labels import pool_of
from gateway.upstream.pools import HealthChecker, Pools
from gateway.upstream.probes import Prober
from gateway.virtual.naming import VirtualServer, parse_virtual_servers
from gateway.wire.caching import MAX_TTL_MS

LIVENESS_CHECK = 0.2  # s between checks of the replicas holding watched streams (kill -> takeover)


@dataclass(frozen=True)
class Plan:
    """What `create_app` reads from the settings before any IO: invalid configuration fails here."""

    metrics: Metrics
    pools: Pools
    pool_headers: dict[str, dict[str, str]]
    authorization_pools: frozenset[str]
    probe_specs: dict[str, ProbeSpec]
    task_tools: TaskTools
    tracing: TracingPlan | None
    virtual: tuple[VirtualServer, ...]
    policy: PolicySource | None
    policy_counters: PolicyCounters


def plan(settings: Settings) -> Plan:
    metrics = Metrics()
    pools = Pools(settings.pools(), gauge=metrics.upstream_healthy)  # invalid upstream config fails here
    authorization_pools = frozenset(csv(settings.forward_authorization))
    unknown = authorization_pools - {"*", *pools.names()}
    if unknown:
        raise errors.ConfigError(f"forward_authorization: unknown pool(s) {sorted(unknown)}")
    counters = PolicyCounters(metrics.registry)
    return Plan(
        metrics=metrics,
        pools=pools,
        pool_headers=settings.pool_headers(),
        authorization_pools=authorization_pools,
        probe_specs=settings.probes(),
        # bad --task-tools / --task-sync-input fail here, at start-up
        task_tools=parse_task_tools(settings.task_tools, pools.names(), settings.task_sync_input),
        tracing=plan_tracing(os.environ),  # the standard OTEL_* variables; an unsupported protocol fails here
        virtual=parse_virtual_servers(settings.virtual_servers, pools.names(), settings.virtual_separator),
        # a policy file that does not parse or compile (or the missing `policy` extra) fails here
        policy=PolicySource(settings.policy, counters) if settings.policy else None,
        policy_counters=counters,
    )


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class StoreSide:
    """The store's clients: `control` is the heartbeat's own (it is `redis` on the embedded store)."""

    redis: Redis
    control: Redis
    keys: Keys
    sessions: SessionStore
    event_log: EventLog
    claims: Claims
    idempotency: Idempotency
    limiter: Limiter

    async def aclose(self) -> None:
        if self.control is not self.redis:
            await self.control.aclose()
        await self.redis.aclose()


def build_store(settings: Settings, replica: str, metrics: Metrics) -> StoreSide:
    def store(max_connections: int, name: str) -> Redis:
        return connect(
            settings.redis_url,
            max_connections=max_connections,
            cluster=settings.redis_cluster,
            sentinels=settings.sentinels(),
            sentinel_master=settings.redis_sentinel_master,
            client_name=name,
        )

    redis = store(settings.redis_max_connections, f"mcpgw:{replica}")
    keys = Keys(settings.key_prefix)
    sessions = SessionStore(redis, keys, settings.session_ttl)
    return StoreSide(
        redis=redis,
        # The heartbeat has its own connections: a burst that drains the command pool must not make
        # this replica look dead (its streams would be taken over while it is fine).
        control=(
            redis  # the embedded store is this process: nothing to starve
            if settings.embedded_store
            else store(2, f"mcpgw:{replica}:control")  # per node on a Cluster
        ),
        keys=keys,
        sessions=sessions,
        event_log=EventLog(
            redis, keys, maxlen=settings.stream_maxlen, ttl=settings.session_ttl, retention=settings.stream_retention
        ),
        claims=Claims(
            redis,
            keys,
            ttl=settings.session_ttl,
            max_requests=settings.replay_max_requests,
            max_answer=settings.replay_max_answer_bytes,
            renewals=sessions.renewals,
        ),
        idempotency=Idempotency(
            IdempotencyStore(redis, keys, ttl=settings.idempotency_ttl),
            max_response=settings.idempotency_max_response_bytes,
        ),
        limiter=Limiter(
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
        ),
    )


@dataclass(frozen=True)
class UpstreamSide:
    """`http` (aiohttp) serves the health probes and the JWKS fetch; `pool` the request path."""

    http: aiohttp.ClientSession
    timers: CoarseTimers
    pool: Http1Pool
    client: UpstreamClient
    health: HealthChecker

    async def aclose(self) -> None:
        await self.pool.close()
        await self.http.close()


def build_upstream(settings: Settings, plan: Plan, tracer: Tracer) -> UpstreamSide:
    http = new_http_session(connect_timeout=settings.connect_timeout, pool_size=settings.upstream_pool_size)
    timers = CoarseTimers(asyncio.get_running_loop())  # the long waits of idle streams
    pool = new_upstream_pool(
        connect_timeout=settings.connect_timeout,
        pool_size=settings.upstream_pool_size,
        timers=timers,
        acquire_timeout=settings.upstream_acquire_timeout,
    )
    plan.metrics.upstream_connections.set_function(pool.open_connections)
    return UpstreamSide(
        http=http,
        timers=timers,
        pool=pool,
        client=UpstreamClient(
            pool,
            request_timeout=settings.request_timeout,
            latency=plan.metrics.upstream_latency,
            tracer=tracer,
            pool_of=pool_of((p, plan.pools.get(p).instances) for p in plan.pools.names()),
        ),
        health=HealthChecker(plan.pools, Prober(http, timeout=settings.health_timeout), plan.probe_specs),
    )


@dataclass(frozen=True)
class StreamSide:
    liveness: Liveness
    tail: Tail
    relay: Relay


async def start_streams(
    settings: Settings,
    replica: str,
    store: StoreSide,
    upstream: UpstreamSide,
    metrics: Metrics,
    supervisor: Supervisor,
    tracer: Tracer,
) -> StreamSide:
    """Presence and the tail started (a kill of this process is seen from now on), the relay built."""
    keys = store.keys
    liveness = Liveness(store.control, keys, replica, ttl=settings.lease_ttl, interval=settings.lease_ttl / 5)
    tail = Tail(
        store.redis, keys, store.event_log, liveness, check_interval=min(LIVENESS_CHECK, settings.lease_ttl / 5)
    )
    await tail.start()  # presence first: from now on a kill of this process is seen at once
    metrics.tail_watches.set_function(tail.__len__)
    await liveness.beat()
    relay = Relay(
        log_=store.event_log,
        sessions=store.sessions,
        upstream=upstream.client,
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
        timers=upstream.timers,
    )
    return StreamSide(liveness=liveness, tail=tail, relay=relay)


def run_streams(streams: StreamSide, supervisor: Supervisor, metrics: Metrics) -> None:
    """The heartbeat and the tail's loop, owned by the supervisor."""

    async def lapsed() -> None:  # our key had expired: others may have taken our streams
        metrics.liveness_lapses.inc()
        await streams.relay.verify_leases()

    supervisor.spawn(streams.liveness.run(on_lapse=lapsed), name="liveness")
    supervisor.spawn(streams.tail.run(), name="tail")


async def close_streams(streams: StreamSide) -> None:
    with contextlib.suppress(errors.StoreError):
        await streams.liveness.clear()
    await streams.tail.aclose()


def build_tasks(
    settings: Settings,
    tools: TaskTools,
    store: StoreSide,
    upstream: UpstreamClient,
    supervisor: Supervisor,
    liveness: Liveness,
    metrics: Metrics,
    tracer: Tracer,
) -> TaskService | None:
    """Gateway-served tasks, when some pool has `--task-tools` (else no task records)."""
    if not tools.pools:
        return None
    tasks = TaskStore(store.redis, store.keys)
    runner = Runner(
        store=tasks,
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
        store=tasks,
        runner=runner,
        liveness=liveness,
        settings=TaskSettings(ttl_ms=int(settings.task_ttl * 1000), poll_ms=settings.task_poll_interval),
        metrics=metrics,
    )


def build_cache(
    settings: Settings,
    store: StoreSide,
    pools: Pools,
    upstream: UpstreamClient,
    headers: HeaderPolicy,
    supervisor: Supervisor,
    metrics: Metrics,
) -> ResponseCache | None:
    """The response cache and its watcher, when `--response-cache` is on."""
    if not settings.response_cache:
        return None
    responses = ResponseStore(store.redis, store.keys, max_ttl_ms=MAX_TTL_MS)
    invalidations = Invalidations(responses, metrics)
    # one subscriptions/listen per instance of a pool in use: list changes drop cached lists
    watcher = Watcher(
        pools=pools,
        upstream=upstream,
        headers=headers,
        cache=invalidations,
        supervisor=supervisor,
        max_line=settings.sse_max_line,
    )
    return ResponseCache(
        responses,
        metrics,
        max_bytes=settings.response_cache_max_bytes,
        max_line=settings.sse_max_line,
        in_use=watcher.watch,
        invalidations=invalidations,
    )
