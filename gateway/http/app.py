"""The ASGI app: the lifespan, where every IO client is created, wired and closed; the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from gateway.bridging.setup import check_settings as check_bridge_settings
from gateway.bridging.setup import start_bridge, start_eras
from gateway.config import Settings
from gateway.eras.legacy_sse import install as install_legacy_sse
from gateway.http.auth import METADATA_PATH
from gateway.http.endpoints import build_admission, build_gateway
from gateway.http.gateway import Gateway
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
from gateway.http.wiring import (
    build_store,
    build_upstream,
    close_streams,
    plan,
    replica_id,
    run_streams,
    start_streams,
)
from gateway.supervisor import Supervisor
from gateway.tracing.api import NOOP

log = logging.getLogger("gateway.http.app")


def create_app(settings: Settings, *, on_started: Callable[[], None] | None = None) -> GatewayApp:
    """`on_started`: called once the lifespan has built everything (the process owner's tuning hook)."""
    planned = plan(settings)  # invalid configuration fails here, before any IO
    pools, metrics = planned.pools, planned.metrics
    check_bridge_settings(settings, pools)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        replica = replica_id()
        scrape = None
        if settings.metrics_port:  # /metrics on its own listener, never the MCP port (docs/hardening.md)
            scrape = MetricsListener(
                metrics.render, host=settings.metrics_host, port=settings.metrics_port, reuse_port=settings.workers > 1
            )
            await scrape.start()
        tracer = planned.tracing.build(replica) if planned.tracing is not None else NOOP
        supervisor = Supervisor()
        store = build_store(settings, replica, metrics)
        upstream = build_upstream(settings, planned, tracer)
        streams = await start_streams(settings, replica, store, upstream, metrics, supervisor, tracer)
        health = upstream.health
        await health.check_all()  # a fresh replica knows which instances are up before it serves
        supervisor.spawn(health.run(), name="health-checks")
        admission = build_admission(settings, planned, store, upstream.http, supervisor)
        run_streams(streams, supervisor, metrics)
        redis, keys, headers = store.redis, store.keys, admission.headers
        eras = await start_eras(settings, pools, redis, keys, upstream.client, headers, supervisor)
        bridge = await start_bridge(
            settings, eras, pools, redis, keys, upstream.client, headers, supervisor, metrics, tracer
        )
        app.state.gateway = build_gateway(
            settings, planned, replica, store, upstream.client, streams, admission, supervisor, tracer, bridge
        )
        log.info(
            "gateway up: pools %s, health probes %s",
            {p: list(pools.get(p).instances) for p in pools.names()},
            {p: f"{spec.describe()} every {spec.interval:g} s" for p, spec in planned.probe_specs.items()},
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
            await streams.relay.finish_pumps(settings.drain_timeout - (gateway.loop.time() - started))
            await supervisor.aclose()  # liveness, tail, health checks, task runners (they fail their tasks)
            await close_streams(streams)
            await upstream.aclose()
            await store.aclose()
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
