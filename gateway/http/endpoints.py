"""The composition root's last builders: admission (auth, Origin, limits) and the endpoints of each era,
bundled into the `Gateway` every request handler reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from gateway.audit.building import build_audit
from gateway.bridging.onto_2025.bridge import Bridge
from gateway.bridging.onto_2026.wiring import build_onto_2026
from gateway.config import Settings
from gateway.config.specs import csv
from gateway.eras.sessionful import SessionfulEndpoint
from gateway.eras.stateless import StatelessEndpoint
from gateway.http.auth import Authenticator
from gateway.http.gateway import Gateway
from gateway.http.guard import Guard
from gateway.http.jwks import JwksCache
from gateway.http.wiring import Plan, StoreSide, StreamSide, build_cache, build_tasks
from gateway.replay.replays import Replays
from gateway.supervisor import Supervisor
from gateway.tasks.passthrough import TaskRoutes
from gateway.tracing.api import Tracer
from gateway.upstream.affinity import Affinity
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.virtual.wiring import build_virtual


@dataclass(frozen=True)
class Admission:
    """The gateway's own auth (when `--auth-issuer` is set), the headers sent upstream, the guard."""

    authenticator: Authenticator | None
    headers: HeaderPolicy
    guard: Guard


def build_admission(
    settings: Settings, plan: Plan, store: StoreSide, http: aiohttp.ClientSession, supervisor: Supervisor
) -> Admission:
    """`supervisor` owns the JWKS fetches (one at a time, never awaited under a lock)."""
    jwks = (
        JwksCache(settings.auth_jwks_url, http, supervisor, min_refresh=settings.jwks_min_refresh)
        if settings.auth_jwks_url
        else None
    )
    authenticator = (
        Authenticator(
            issuer=settings.auth_issuer,
            audience=settings.audience or "",  # Settings refuses auth without one
            resource=settings.resource or "",
            jwks=jwks,
            public_key=settings.auth_public_key,
            algorithms=csv(settings.auth_algorithms),
        )
        if settings.auth_issuer
        else None
    )
    return Admission(
        authenticator=authenticator,
        headers=HeaderPolicy(
            drop_authorization=authenticator is not None,
            per_pool=plan.pool_headers,
            authorization_pools=plan.authorization_pools,
        ),
        guard=Guard(
            origins=settings.origin_list(),
            limiter=store.limiter,
            authenticator=authenticator,
            resource=settings.resource,
            authorization_servers=list(csv(settings.authorization_servers)),
            max_header_bytes=settings.max_header_bytes,
            trust_forwarded_for=settings.trust_forwarded_for,
        ),
    )


def build_gateway(
    settings: Settings,
    plan: Plan,
    replica: str,
    store: StoreSide,
    upstream: UpstreamClient,
    streams: StreamSide,
    admission: Admission,
    supervisor: Supervisor,
    tracer: Tracer,
    bridge: Bridge | None = None,
) -> Gateway:
    pools, metrics = plan.pools, plan.metrics
    affinity = Affinity(
        pools=pools,
        sessions=store.sessions,
        upstream=upstream,
        redis=store.redis,
        keys=store.keys,
        max_body=settings.max_body_bytes,
    )
    tasks = build_tasks(settings, plan.task_tools, store, upstream, supervisor, streams.liveness, metrics, tracer)
    cache = build_cache(settings, store, pools, upstream, admission.headers, supervisor, metrics)
    replays = Replays(store.claims, store.event_log, streams.liveness, wait=settings.request_timeout)
    governance = build_audit(settings, plan, replica, store, admission.guard.client_ip, supervisor)
    return Gateway(
        settings=settings,
        pools=pools,
        metrics=metrics,
        redis=store.redis,
        relay=streams.relay,
        sessionful=SessionfulEndpoint(
            pools=pools,
            sessions=store.sessions,
            log_=store.event_log,
            relay=streams.relay,
            upstream=upstream,
            affinity=affinity,
            metrics=metrics,
            headers=admission.headers,
            limiter=store.limiter,
            max_body=settings.max_body_bytes,
            max_batch=settings.max_batch,
            claims=store.claims,
            replays=replays,
            idempotency=store.idempotency,
            replica=replica,
            policy=governance.governor,
        ),
        stateless=StatelessEndpoint(
            pools=pools,
            upstream=upstream,
            headers=admission.headers,
            max_body=settings.max_body_bytes,
            idempotency=store.idempotency,
            tasks=tasks,
            routes=TaskRoutes(
                store.redis, store.keys, default_ttl_ms=int(settings.task_ttl * 1000), max_line=settings.sse_max_line
            ),
            cache=cache,
            policy=governance.governor,
            max_line=settings.sse_max_line,
            bridge=bridge,
        ),
        virtual=build_virtual(
            plan.virtual,
            pools=pools,
            redis=store.redis,
            keys=store.keys,
            sessions=store.sessions,
            event_log=store.event_log,
            relay=streams.relay,
            upstream=upstream,
            headers=admission.headers,
            limiter=store.limiter,
            metrics=metrics,
            supervisor=supervisor,
            cache=cache,
            claims=store.claims,
            replays=replays,
            idempotency=store.idempotency,
            max_body=settings.max_body_bytes,
            retry=settings.health_interval,
            replica=replica,
        ),
        guard=admission.guard,
        supervisor=supervisor,
        keys=store.keys,
        loop=asyncio.get_running_loop(),
        tracer=tracer,
        onto_2026=build_onto_2026(
            settings, pools, store, upstream, streams, replica, admission.headers, metrics, tracer
        ),
        audit=governance.audit,
    )
