"""The ASGI app: lifespan (every IO client created and closed here), routes, era dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway import errors, logs
from gateway.config import Settings, csv
from gateway.eras.legacy_sse import install as install_legacy_sse
from gateway.eras.sessionful import SessionfulEndpoint, error_response, read_body
from gateway.eras.stateless import StatelessEndpoint
from gateway.http.auth import METADATA_PATH, Authenticator
from gateway.http.guard import Guard, HeadersTooLarge
from gateway.metrics import Metrics
from gateway.store.client import Redis, connect, ping
from gateway.store.eventlog import EventLog
from gateway.store.keys import Keys
from gateway.store.limits import LimitConfig, Limiter
from gateway.store.sessions import SessionStore
from gateway.streams.liveness import Liveness
from gateway.streams.pump import PumpConfig
from gateway.streams.relay import Relay, RelayConfig
from gateway.streams.tail import Tail
from gateway.supervisor import Supervisor
from gateway.tasks.config import TaskTools, parse_task_tools
from gateway.tasks.liveness import ReplicaLiveness
from gateway.tasks.passthrough import TaskRoutes
from gateway.tasks.runner import Runner
from gateway.tasks.service import TaskService, TaskSettings
from gateway.tasks.store import TaskStore
from gateway.upstream.affinity import Affinity
from gateway.upstream.client import HeaderPolicy, UpstreamClient, new_http_session, new_upstream_pool
from gateway.upstream.pools import HealthChecker, Pools
from gateway.upstream.probes import Prober
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


class GatewayApp(Starlette):
    """Starlette, with `/mcp` and `/mcp/{pool}` served straight from the ASGI call.

    Every MCP request would otherwise cross the middleware stack and the router (exception
    middleware, route matching over every route, the request/response wrapper) although
    `mcp_endpoint` answers every outcome itself; the other routes keep the full stack.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _MCP_METHODS:
            pool = _mcp_pool(scope["path"][len(scope.get("root_path", "")) :])
            if pool is not False:
                scope["app"] = self
                scope["path_params"] = {} if pool is None else {"pool": pool}
                response = await mcp_endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_MCP_METHODS = ("GET", "POST", "DELETE")  # others take the router: its 405 with `Allow`


def _mcp_pool(path: str) -> str | Literal[False] | None:
    """`/mcp` -> None, `/mcp/<pool>` -> the pool name, any other path -> False."""
    if path == "/mcp":
        return None
    if path.startswith("/mcp/"):
        pool = path[5:]
        if pool and "/" not in pool:
            return pool
    return False


def create_app(settings: Settings) -> GatewayApp:
    metrics = Metrics()
    pools = Pools(settings.pools(), gauge=metrics.upstream_healthy)  # invalid upstream config fails here
    pool_headers = settings.pool_headers()
    probe_specs = settings.probes()
    # bad --task-tools / --task-sync-input fail here, at start-up
    task_tools = parse_task_tools(settings.task_tools, pools.names(), settings.task_sync_input)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

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
        http = new_http_session(connect_timeout=settings.connect_timeout, pool_size=settings.upstream_pool_size)
        supervisor = Supervisor()
        keys = Keys(settings.key_prefix)
        sessions = SessionStore(redis, keys, settings.session_ttl)
        event_log = EventLog(redis, keys, maxlen=settings.stream_maxlen, ttl=settings.session_ttl)
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
        upstream_pool = new_upstream_pool(
            connect_timeout=settings.connect_timeout, pool_size=settings.upstream_pool_size
        )
        upstream = UpstreamClient(
            upstream_pool, request_timeout=settings.request_timeout, latency=metrics.upstream_latency
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
        supervisor.spawn(liveness.run(), name="liveness")
        supervisor.spawn(tail.run(), name="tail")
        tasks = _task_service(settings, task_tools, redis, keys, upstream, supervisor, liveness, metrics)
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
            ),
            stateless=StatelessEndpoint(
                pools=pools,
                upstream=upstream,
                headers=header_policy,
                max_body=settings.max_body_bytes,
                tasks=tasks,
                routes=TaskRoutes(
                    redis, keys, default_ttl_ms=int(settings.task_ttl * 1000), max_line=settings.sse_max_line
                ),
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
        log.info(
            "gateway up: pools %s, health probes %s",
            {p: list(pools.get(p).instances) for p in pools.names()},
            {p: f"{spec.describe()} every {spec.interval:g} s" for p, spec in probe_specs.items()},
        )
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

    app = GatewayApp(lifespan=lifespan)
    # GET/POST/DELETE on these two are served by GatewayApp.__call__ before routing.
    app.add_route("/mcp", mcp_endpoint, methods=list(_MCP_METHODS))
    app.add_route("/mcp/{pool}", mcp_endpoint, methods=list(_MCP_METHODS))
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.add_route("/metrics", metrics_endpoint, methods=["GET"])
    app.add_route(METADATA_PATH, protected_resource, methods=["GET"])
    app.add_route(METADATA_PATH + "/{path:path}", protected_resource, methods=["GET"])
    install_legacy_sse(app)  # 2024-11-05 HTTP+SSE clients: GET /sse, POST /messages
    return app


# Size limits refused at the front door, by the `limit` label of mcpgw_limits_hit_total (the per-client
# limits count themselves in store/limits.py).
SIZE_LIMITS: dict[type[errors.GatewayError], str] = {errors.PayloadTooLarge: "size", HeadersTooLarge: "headers"}


def _task_service(
    settings: Settings,
    tools: TaskTools,
    redis: Redis,
    keys: Keys,
    upstream: UpstreamClient,
    supervisor: Supervisor,
    liveness: Liveness,
    metrics: Metrics,
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
    )
    return TaskService(
        tools=tools,
        store=store,
        runner=runner,
        liveness=ReplicaLiveness(liveness),
        settings=TaskSettings(ttl_ms=int(settings.task_ttl * 1000), poll_ms=settings.task_poll_interval),
        metrics=metrics,
    )


async def mcp_endpoint(request: Request) -> Response:
    started = time.perf_counter()
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
        if type(exc) in SIZE_LIMITS:
            gateway.metrics.limits_hit.labels(SIZE_LIMITS[type(exc)]).inc()
        request_id: errors.JsonRpcId = None
        if isinstance(exc, errors.StoreError):
            gateway.metrics.store_errors.inc()
            log.error("store error: %s", exc)
            # The guard's limits hit the store before the body is read: answer with the request's id.
            request_id, _ = await _peek(request, gateway.settings.max_body_bytes)
        response = error_response(exc, request_id)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        response = error_response(errors.GatewayError("Internal error"))
    gateway.count_request(request.method, response.status_code, era, time.perf_counter() - started)
    return response


async def _unsupported_version(request: Request, exc: errors.UnsupportedVersion, limit: int) -> Response:
    """400 + UnsupportedProtocolVersionError naming the request's id and the versions it could use."""
    request_id, method = await _peek(request, limit)
    supported = protocol.versions_for(has_session=protocol.H_SESSION in request.headers, method=method)
    return error_response(errors.UnsupportedVersion(exc.message, data={**exc.data, "supported": supported}), request_id)


async def _peek(request: Request, limit: int) -> tuple[errors.JsonRpcId, str | None]:
    """The id and method of a POST whose body was not read yet (None, None otherwise)."""
    if request.method == "POST":
        # RuntimeError: the body was consumed already (the error came after parsing it).
        with contextlib.suppress(errors.GatewayError, ClientDisconnect, RuntimeError):
            return protocol.peek(await read_body(request, limit))
    return None, None


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
            await ping(gateway.redis)
    except Exception as exc:  # any failure means "not ready"; the reason is reported
        return JSONResponse({"status": "store unavailable", "error": str(exc)}, status_code=503)
    down = [name for name in gateway.pools.names() if not gateway.pools.pool_ready(name)]
    if down:
        return JSONResponse({"status": "no healthy upstream instance", "pools": down}, status_code=503)
    return JSONResponse({"status": "ready", "pools": gateway.pools.names()})


async def metrics_endpoint(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")
