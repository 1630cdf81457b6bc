"""A 2026-07-28 request served by a 2025-only upstream instance.

The stateless endpoint hands every request of a pool here first (`serve`); a request whose
picked instance speaks 2026 comes back None and goes on natively. Otherwise: `server/discover`
is answered from the instance's InitializeResult (kept with its era); every other request runs
on an upstream session the gateway holds (`sessions.py`), under an id of the gateway's, and its
answer is turned into 2026-07-28 shape; an SSE answer is relayed by `calls.py`. A retry carrying
`inputResponses` continues a call that asked the client something (`rounds.py`), and
`subscriptions/listen` is served by `listen.py`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.responses import error_response, sse_response
from gateway.bridging.eras import EraBook
from gateway.bridging.onto_2025 import checks, listen, rounds, translate
from gateway.bridging.onto_2025.calls import Call, CallStreams
from gateway.bridging.onto_2025.handshake import Handshake
from gateway.bridging.onto_2025.pending import OpenRounds
from gateway.bridging.onto_2025.rounds import Sealer
from gateway.bridging.onto_2025.sessions import HeldSessions
from gateway.metrics import Metrics
from gateway.supervisor import Supervisor
from gateway.tracing.api import NOOP, Tracer
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.wire import protocol, sse
from gateway.wire.protocol import Message

log = logging.getLogger("gateway.bridging.onto_2025.bridge")

DIRECTION = "2026-to-2025"


class Bridge:
    def __init__(
        self,
        *,
        pools: Pools,
        eras: EraBook,
        sessions: HeldSessions,
        handshake: Handshake,
        upstream: UpstreamClient,
        supervisor: Supervisor,
        metrics: Metrics,
        max_body: int,
        max_line: int,
        sealer: Sealer,
        open_rounds: OpenRounds,
        listener: listen.Listener,
        tracer: Tracer = NOOP,
    ) -> None:
        self._sealer = sealer
        self._listener = listener
        self._pools = pools
        self._eras = eras
        self._sessions = sessions
        self._handshake = handshake
        self._counted = metrics.bridged.labels(DIRECTION)
        self._max_body = max_body
        self._tracer = tracer
        self._calls = CallStreams(
            upstream=upstream,
            handshake=handshake,
            sealer=sealer,
            open_rounds=open_rounds,
            sessions=sessions,
            supervisor=supervisor,
            max_line=max_line,
        )
        self._open_rounds = open_rounds

    async def serve(self, request: Request, message: Message, pool: str) -> Response | str | None:
        """The answer, when the instance picked for this request speaks only 2025; else the 2026
        instance picked (the request goes there natively: a pool may mix eras), or None (pinned)."""
        if self._eras.pinned(pool) == "2026":
            return None
        instance = self._pools.pick(pool)
        if await self._eras.era_of(pool, instance) != "2025":
            return instance
        self._counted.inc()
        with self._tracer.span("bridge 2026->2025", attrs={"mcp.method": message.method or ""}):
            try:
                return await self._bridged(request, message, pool, instance)
            except errors.GatewayError as exc:
                return error_response(exc, message.id)

    async def _bridged(self, request: Request, message: Message, pool: str, instance: str) -> Response:
        if not message.is_request:
            # 2026-07-28 has no client notification a 2025 session needs (cancellation is closing
            # the response): accepted, not forwarded.
            return Response(status_code=202)
        method = str(message.method)
        raw_params = message.raw.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        checks.check_request(method, params, request.headers)
        if method == "server/discover":
            return _json(message.id, translate.discover_result(await self._initialized(pool, instance)))
        principal: str = request.state.principal
        if method == "subscriptions/listen":
            return await self._listen(message, params, pool, instance, principal)
        if "requestState" in params or "inputResponses" in params:
            return await self._next_round(message, method, params, principal)
        capabilities, info = translate.declared(params)
        upstream_id = f"mcpgw-{secrets.token_hex(8)}"
        body = json.dumps(translate.upstream_request(message.raw, upstream_id)).encode()
        held = await self._sessions.get(pool, instance, principal, capabilities, info)
        response = await self._calls.send(held, body)
        if response.status == 404 and held.sid:
            # The upstream forgot the session (restart, its own expiry): nothing ran; once more on a new one.
            response.close()
            await self._sessions.forget(held)
            held = await self._sessions.get(pool, instance, principal, capabilities, info)
            response = await self._calls.send(held, body)
        logs, name = translate.wants_logs(params), rounds.name_of(method, params)
        call = Call(message.id, method, upstream_id, held, logs, principal, name)
        if response.status != 200:
            return await self._refused(response, call)
        if not response.is_sse:
            answer = translate.answer_in(await response.read(self._max_body), False, upstream_id)
            if answer is None:
                raise errors.UpstreamError("Bad upstream answer: no response to the bridged request")
            status = checks.MethodNotServed.status if checks.method_not_found(answer) else 200
            return _json_message(translate.client_response(answer, method, message.id), status)
        return await self._streamed(self._calls.relay(response, call), call)

    async def _listen(
        self, message: Message, params: Mapping[str, Any], pool: str, instance: str, principal: str
    ) -> Response:
        """subscriptions/listen on the held session of this key (`listen.py`)."""
        capabilities, info = translate.declared(params)
        held = await self._sessions.get(pool, instance, principal, capabilities, info)
        announced = (await self._initialized(pool, instance)).get("capabilities")
        wanted = listen.honoured(params.get("notifications"), announced if isinstance(announced, dict) else {})
        return sse_response(await self._listener.open(held, message.id, wanted), {})

    async def abandoned(self, digest: str, upstream_id: str) -> None:
        """A round whose client never came back: its upstream call is cancelled (`pending.py`)."""
        held = await self._sessions.by_digest(digest)
        if held is not None:
            await self._calls.cancel(held, upstream_id, "the 2026-07-28 client did not answer in time")

    async def _initialized(self, pool: str, instance: str) -> Mapping[str, Any]:
        """The instance's InitializeResult: kept in Redis, or learnt once (a session opened and closed)."""
        initialized = await self._eras.initialize_result(instance)
        if initialized is None:
            opened = await self._handshake.open(pool, instance, {}, translate.DEFAULT_CLIENT_INFO)
            await self._handshake.close(pool, instance, opened.sid, opened.version)
            initialized = opened.result
            await self._eras.keep_initialized(instance, initialized)
        return initialized

    async def _next_round(self, message: Message, method: str, params: Mapping[str, Any], principal: str) -> Response:
        """A retry with `inputResponses` (mrtr §Basic Workflow): the answers go upstream as the
        responses its call waits for, and the call's stream is resumed after where it stopped."""
        name = rounds.name_of(method, params)
        round_ = self._sealer.open(params.get("requestState"), principal, method, name)
        if not await self._open_rounds.take(round_):
            # mrtr §Server Requirements: the upstream's question can be answered once only.
            raise errors.InvalidParams("Invalid params: requestState was used already (or its call was cancelled)")
        held = await self._sessions.by_digest(round_.digest)
        if held is None or held.instance != round_.instance:
            raise errors.UpstreamError("The upstream session of this request is gone: send it again afresh")
        answers = params.get("inputResponses")
        answers = answers if isinstance(answers, dict) else {}
        for key, upstream_request in round_.asked.items():
            answer = answers.get(key)
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": upstream_request}
            if isinstance(answer, dict):
                reply["result"] = {k: v for k, v in answer.items() if k != "resultType"}
            else:
                reply["error"] = {"code": errors.InvalidParams.code, "message": "The client gave no answer"}
            (await self._calls.send(held, json.dumps(reply).encode())).close()
        # 2025-11-25 transports §Resumability: the call's stream, from the event after the question.
        response = await self._calls.resume(held, round_.last_event)
        if response is None:
            raise errors.UpstreamError("Bad upstream answer: the call's stream could not be resumed")
        logs = translate.wants_logs(params)
        call = Call(message.id, method, round_.call, held, logs, principal, name)
        return await self._streamed(self._calls.relay(response, call, resumed_from=round_.last_event), call)

    async def _streamed(self, stream: AsyncGenerator[bytes, None], call: Call) -> Response:
        """The SSE answer, unless its first event is the upstream's "method not found": a 2026
        server answers that with HTTP 404 (basic/transports §Protocol Version Header)."""
        first = await anext(stream, None)
        if first is None:
            raise errors.UpstreamError("Bad upstream answer: an empty stream")
        answer = _data(first)
        if answer is not None and answer.get("id") == call.client_id and checks.method_not_found(answer):
            await stream.aclose()
            return _json_message(answer, checks.MethodNotServed.status)
        return sse_response(_chained(first, stream), {})

    async def _refused(self, response: UpstreamResponse, call: Call) -> Response:
        """A non-200 upstream answer: its JSON-RPC error under the client's id, or a 502."""
        status = response.status
        answer = translate.answer_in(await response.read(self._max_body), False, call.upstream_id)
        if answer is None or "error" not in answer:
            raise errors.UpstreamError(f"Bad upstream answer: HTTP {status} to the bridged request")
        return _json_message({**answer, "id": call.client_id}, status)


async def _chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for item in rest:
        yield item


def _data(encoded: bytes) -> dict[str, Any] | None:
    """The JSON message of one event this module encoded."""
    for event in sse.Parser().feed(encoded):
        try:
            message = json.loads(event.data or "")
        except ValueError:
            return None
        return message if isinstance(message, dict) else None
    return None


def _json(request_id: Any, result: Mapping[str, Any]) -> Response:
    return _json_message({"jsonrpc": "2.0", "id": request_id, "result": dict(result)})


def _json_message(message: Mapping[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(message), status_code=status, media_type=protocol.JSON)
