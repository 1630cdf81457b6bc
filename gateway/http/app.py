"""The ASGI app: lifespan (every IO client created and closed here), routes, era dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from gateway import errors, logs
from gateway.config import Settings, csv
from gateway.eras.idempotent import Idempotency
from gateway.eras.legacy_sse import install as install_legacy_sse
from gateway.eras.replays import Replays
from gateway.eras.responses import error_response, read_body
from gateway.eras.sessionful import SessionfulEndpoint
from gateway.eras.stateless import StatelessEndpoint
from gateway.http.auth import METADATA_PATH, Authenticator
from gateway.http.guard import Guard
from gateway.http.refusals import DrainRefusedBodies
from gateway.metrics import Metrics
from gateway.store.claims import Claims
from gateway.store.client import Redis, connect
from gateway.store.eventlog import EventLog
from gateway.store.idempotency import IdempotencyStore
from gateway.store.keys import Keys
from gateway.store.limits import LimitConfig, Limiter
from gateway.store.sessions import SessionStore
from gateway.streams.liveness import Liveness
from gateway.streams.pump import PumpConfig
from gateway.streams.relay import Relay, RelayConfig
from gateway.streams.tail import Tail
from gateway.supervisor import Supervisor
from gateway.upstream.affinity import Affinity
from gateway.upstream.client import HeaderPolicy, UpstreamClient, new_http_session
from gateway.upstream.pools import HealthChecker, Pools
from gateway.wire import protocol

log = logging.getLogger("gateway.http.app")

LIVENESS_CHECK = 0.2  # s between checks of the replicas holding watched streams (kill -> takeover)


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
    drain_started: float | None = None

    def start_drain(self) -> None:
        """Called from the signal handler: readiness goes 503, open SSE connections end."""
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        if not self.relay.draining.is_set():
            log.info("draining: readiness off, closing SSE connections with a retry hint; pumps keep writing")
            self.drain_started = self.loop.time()
            self.relay.draining.set()
            self.relay.wake_all()


def create_app(settings: Settings) -> FastAPI:
    pools = Pools(settings.pools())  # invalid upstream config fails here, at start-up
    pool_headers = settings.pool_headers()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        redis = connect(
            settings.redis_url, max_connections=settings.redis_max_connections, client_name=f"mcpgw:{replica}"
        )
        http = new_http_session(connect_timeout=settings.connect_timeout, pool_size=settings.upstream_pool_size)
        supervisor = Supervisor()
        keys = Keys(settings.key_prefix)
        sessions = SessionStore(redis, keys, settings.session_ttl)
        event_log = EventLog(redis, keys, maxlen=settings.stream_maxlen, ttl=settings.session_ttl)
        # The heartbeat has its own connections: a burst that drains the command pool must not make
        # this replica look dead (its streams would be taken over while it is fine).
        control = (
            connect(settings.redis_url, max_connections=2, client_name=f"mcpgw:{replica}:control")
            if settings.redis_url
            else redis  # the embedded store is this process: nothing to starve
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
        upstream = UpstreamClient(http, request_timeout=settings.request_timeout, latency=metrics.upstream_latency)
        health = HealthChecker(pools, http, interval=settings.health_interval, timeout=settings.health_timeout)
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
        )
        authenticator = (
            Authenticator(
                issuer=settings.auth_issuer,
                audience=settings.auth_audience or settings.resource_url,
                jwks_url=settings.auth_jwks_url,
                public_key=settings.auth_public_key,
                algorithms=csv(settings.auth_algorithms),
                http=http,
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
                pump=PumpConfig(idle_timeout=settings.stream_idle_timeout, max_line=settings.sse_max_line),
                replay_limit=settings.stream_maxlen * 2,
            ),
            replica=replica,
            tail=tail,
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
        )
        supervisor.spawn(liveness.run(), name="liveness")
        supervisor.spawn(tail.run(), name="tail")
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
            ),
            guard=Guard(
                origins=settings.origin_list(),
                limiter=limiter,
                authenticator=authenticator,
                resource_url=settings.resource_url,
                authorization_servers=list(csv(settings.authorization_servers)),
                max_header_bytes=settings.max_header_bytes,
                trust_forwarded_for=settings.trust_forwarded_for,
            ),
            supervisor=supervisor,
            keys=keys,
            loop=asyncio.get_running_loop(),
        )
        log.info("gateway up: pools %s", {p: list(pools.get(p).instances) for p in pools.names()})
        try:
            yield
        finally:
            gateway: Gateway = app.state.gateway
            gateway._drain()
            # Drain keeps pumping: streams that end before the deadline lose nothing, resumable
            # upstream or not; the rest are released (and adopted elsewhere) at the deadline.
            started = gateway.drain_started if gateway.drain_started is not None else gateway.loop.time()
            await relay.finish_pumps(settings.drain_timeout - (gateway.loop.time() - started))
            await supervisor.aclose()  # liveness, tail, health checks (and any pump left)
            with contextlib.suppress(errors.StoreError):
                await liveness.clear()
            await tail.aclose()
            await http.close()
            if control is not redis:
                await control.aclose()
            await redis.aclose()

    app = FastAPI(title="mcp-gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"])
    app.add_route("/mcp/{pool}", mcp_endpoint, methods=["GET", "POST", "DELETE"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.add_route("/metrics", metrics_endpoint, methods=["GET"])
    app.add_route(METADATA_PATH, protected_resource, methods=["GET"])
    app.add_route(METADATA_PATH + "/{path:path}", protected_resource, methods=["GET"])
    install_legacy_sse(app)  # 2024-11-05 HTTP+SSE clients: GET /sse, POST /messages
    # Refusals sent before the body is read reach a client that is still uploading.
    app.add_middleware(DrainRefusedBodies, limit=settings.refusal_drain_bytes)
    return app


async def mcp_endpoint(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    pool = request.path_params.get("pool")
    request.state.principal = ""
    era = "-"
    session_id = request.headers.get(protocol.H_SESSION)
    logs.session_var.set(logs.short(session_id) if session_id else None)
    try:
        await gateway.guard.admit(request)
        era = protocol.header_version(request.headers.get(protocol.H_VERSION))
        if protocol.is_stateless(era):
            response = await gateway.stateless.handle(request, pool)
        elif request.method == "POST":
            response = await gateway.sessionful.post(request, pool, era)
        elif request.method == "GET":
            response = await gateway.sessionful.get(request, pool, era)
        elif request.method == "DELETE":
            response = await gateway.sessionful.delete(request, pool)
        else:
            raise errors.MethodNotAllowed("Method Not Allowed")
    except errors.UnsupportedVersion as exc:
        response = await _unsupported_version(request, exc, gateway.settings.max_body_bytes)
    except errors.GatewayError as exc:
        if isinstance(exc, errors.StoreError):
            gateway.metrics.store_errors.inc()
            log.error("store error: %s", exc)
        response = error_response(exc)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        response = error_response(errors.GatewayError("Internal error"))
    gateway.metrics.requests.labels(request.method, str(response.status_code), era).inc()
    return response


async def _unsupported_version(request: Request, exc: errors.UnsupportedVersion, limit: int) -> Response:
    """400 + UnsupportedProtocolVersionError naming the request's id and the versions it could use."""
    request_id: errors.JsonRpcId = None
    method: str | None = None
    if request.method == "POST":
        with contextlib.suppress(errors.GatewayError, ClientDisconnect):
            request_id, method = protocol.peek(await read_body(request, limit))
    supported = protocol.versions_for(has_session=protocol.H_SESSION in request.headers, method=method)
    return error_response(errors.UnsupportedVersion(exc.message, data={**exc.data, "supported": supported}), request_id)


async def protected_resource(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return gateway.guard.metadata(request)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.relay.draining.is_set():
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        async with asyncio.timeout(1.0):
            await gateway.redis.ping()
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return JSONResponse({"status": "store unavailable", "error": str(exc)}, status_code=503)
    down = [name for name in gateway.pools.names() if not gateway.pools.pool_ready(name)]
    if down:
        return JSONResponse({"status": "no healthy upstream instance", "pools": down}, status_code=503)
    return JSONResponse({"status": "ready", "pools": gateway.pools.names()})


async def metrics_endpoint(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")
