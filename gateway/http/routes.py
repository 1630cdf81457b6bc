"""The routes: `/mcp` straight from the ASGI call (era dispatch), health, readiness, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway import errors, logs
from gateway.asgi.responses import RelayedResponse, error_response, read_body
from gateway.http import traced
from gateway.http.gateway import Gateway
from gateway.http.refusals import refusal_guard
from gateway.http.requests import McpRequest
from gateway.http.server import RESPOND, TAKE_BODY
from gateway.store.client import ping
from gateway.wire import protocol

log = logging.getLogger("gateway.http.app")  # one logger name for the app's request errors, as before


# Size limits refused at the front door, by the `limit` label of mcpgw_limits_hit_total (the per-client
# limits count themselves in store/limits.py).
SIZE_LIMITS: dict[type[errors.GatewayError], str] = {errors.PayloadTooLarge: "size", errors.HeadersTooLarge: "headers"}


class GatewayApp(Starlette):
    """Starlette, with `/mcp` and `/mcp/{pool}` served straight from the ASGI call.

    Every MCP request would otherwise cross the middleware stack and the router (exception
    middleware, route matching over every route, the request/response wrapper) although
    `mcp_endpoint` answers every outcome itself; the other routes keep the full stack.
    """

    def __init__(self, *, refusal_drain_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._refusal_drain_bytes = refusal_drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in MCP_METHODS:
            pool = _mcp_pool(scope["path"][len(scope.get("root_path", "")) :])
            if pool is not False:
                scope["app"] = self
                scope["path_params"] = {} if pool is None else {"pool": pool}
                gateway: Gateway = self.state.gateway
                # A POST whose body has all arrived takes it at once, from our server (`http/server.py`).
                take = scope.get(TAKE_BODY) if scope["method"] == "POST" and not gateway.tracer.enabled else None
                body = take(scope) if take is not None else None
                # The one layer the direct path keeps: a refusal sent before the body is read must
                # still reach a client that is uploading (the router's stack has it as middleware).
                # Not needed when the body was taken: nothing is left unread. Inline, not nested
                # calls: an open stream holds every frame above its response.
                guard = refusal_guard(scope, receive, send, limit=self._refusal_drain_bytes) if body is None else None
                if guard is not None:
                    receive, send = guard.receive, guard.send
                if gateway.tracer.enabled:
                    await traced.serve(
                        mcp_endpoint, gateway.tracer, gateway.settings.max_body_bytes, scope, receive, send
                    )
                    return
                response = await mcp_endpoint(McpRequest(scope, receive, send, body=body), gateway)
                # A whole answer goes out in one write when our server offers it (`http/server.py`);
                # not while a refused body is still to be drained: the guard's `send` does that.
                respond = scope.get(RESPOND)
                if (
                    respond is not None
                    and type(response) in _WHOLE
                    and (guard is None or guard.body_done)
                    and respond(scope, response.status_code, response.raw_headers, response.body)
                ):
                    if response.background is not None:
                        await response.background()  # once sent, as the response's own `__call__` does
                    return
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


# Responses whose `__call__` sends `raw_headers` and `body` as they are, in two messages.
_WHOLE = (Response, JSONResponse, RelayedResponse)

MCP_METHODS = ("GET", "POST", "DELETE")  # others take the router: its 405 with `Allow`


def _mcp_pool(path: str) -> str | Literal[False] | None:
    """`/mcp` -> None, `/mcp/<pool>` -> the pool name, any other path -> False."""
    if path == "/mcp":
        return None
    if path.startswith("/mcp/"):
        pool = path[5:]
        if pool and "/" not in pool:
            return pool
    return False


async def mcp_endpoint(request: Request, gateway: Gateway | None = None) -> Response:
    """`gateway`: the app's, when the caller has it at hand (else read off the app's state)."""
    started = time.perf_counter()
    if gateway is None:
        gateway = request.app.state.gateway
    pool = request.path_params.get("pool")
    request.state.principal = ""
    era = "-"
    session_id = request.headers.get(protocol.H_SESSION)
    logs.session_var.set(logs.short(session_id) if session_id else None)
    try:
        await gateway.guard.admit(request)
        era = protocol.header_version(request.headers.get(protocol.H_VERSION))
        if gateway.virtual is not None and gateway.virtual.serves(pool):
            response = await gateway.virtual.handle(request, pool, era)  # type: ignore[arg-type]
        elif protocol.is_stateless(era):
            response = await gateway.stateless.handle(request, pool)
        elif gateway.onto_2026 is not None and await gateway.onto_2026.takes(request, pool):
            response = await gateway.onto_2026.handle(request, pool, era)
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
    except ClientDisconnect:  # the body never came whole (the server's 408 already went out): nobody to answer
        response = Response(status_code=400)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        response = error_response(errors.GatewayError("Internal error"))
    seconds = time.perf_counter() - started
    gateway.count_request(request.method, response.status_code, era, seconds)
    if gateway.audit is not None:
        gateway.audit.after(request, response, era, seconds)  # a decided request's one record
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
    except Exception as exc:  # any failure means "not ready"; the details go to the log only
        cid = errors.correlation_id()
        log.warning("readyz: store unavailable [correlation id %s]: %s: %s", cid, type(exc).__name__, exc)
        return JSONResponse({"status": "store unavailable", "correlationId": cid}, status_code=503)
    down = [name for name in gateway.pools.names() if not gateway.pools.pool_ready(name)]
    if down:
        return JSONResponse({"status": "no healthy upstream instance", "pools": down}, status_code=503)
    return JSONResponse({"status": "ready", "pools": gateway.pools.names()})
