"""A 2026-07-28 request served by a 2025-only upstream instance.

The stateless endpoint hands every request of a pool here first (`serve`); a request whose
picked instance speaks 2026 comes back None and goes on natively. Otherwise: `server/discover`
is answered from the instance's InitializeResult (kept by era detection); every other request
runs on an upstream session the gateway holds (`sessions.py`), under an id of the gateway's,
and its answer is turned into 2026-07-28 shape. An SSE answer is relayed as it comes (progress
and the request's log messages first, then the result); closing it before the result sends
`notifications/cancelled` upstream (2026-07-28 basic/transports: closing the response cancels
the request; a 2025 server only stops on the notification).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.responses import error_response, sse_response
from gateway.bridging.eras import EraBook
from gateway.bridging.onto_2025 import checks, listen, rounds, translate
from gateway.bridging.onto_2025.handshake import Handshake
from gateway.bridging.onto_2025.rounds import Sealer
from gateway.bridging.onto_2025.sessions import Held, HeldSessions
from gateway.metrics import Metrics
from gateway.supervisor import Supervisor
from gateway.tracing.api import NOOP, Tracer
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.wire import protocol, sse
from gateway.wire.protocol import Message

log = logging.getLogger("gateway.bridging.onto_2025.bridge")

DIRECTION = "2026-to-2025"
MAX_RESUMES = 5  # an upstream that closes the stream early (SSE polling) is asked again this often
# 2025 server-to-client requests the bridge cannot carry yet: answered upstream so no call hangs.
REFUSED_CODE = -32601


@dataclass(frozen=True)
class Call:
    """One bridged request: the client's id and method, the id it has upstream, and its session."""

    client_id: Any
    method: str
    upstream_id: str
    held: Held
    logs: bool  # the client asked for log messages (2026-07-28: `_meta` logLevel)
    principal: str
    name: str


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
        listener: listen.Listener,
        tracer: Tracer = NOOP,
    ) -> None:
        self._sealer = sealer
        self._listener = listener
        self._pools = pools
        self._eras = eras
        self._sessions = sessions
        self._handshake = handshake
        self._upstream = upstream
        self._supervisor = supervisor
        self._counted = metrics.bridged.labels(DIRECTION)
        self._max_body = max_body
        self._max_line = max_line
        self._tracer = tracer

    async def serve(self, request: Request, message: Message, pool: str) -> Response | None:
        """The answer, when the instance picked for this request speaks only 2025; else None."""
        if self._eras.pinned(pool) == "2026":
            return None
        instance = self._pools.pick(pool)
        if await self._eras.era_of(pool, instance) != "2025":
            return None
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
        response = await self._send(held, body)
        if response.status == 404 and held.sid:
            # The upstream forgot the session (restart, its own expiry): nothing ran; once more on a new one.
            response.close()
            await self._sessions.forget(held)
            held = await self._sessions.get(pool, instance, principal, capabilities, info)
            response = await self._send(held, body)
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
        return await self._streamed(self._relay(response, call), call)

    async def _listen(
        self, message: Message, params: Mapping[str, Any], pool: str, instance: str, principal: str
    ) -> Response:
        """subscriptions/listen on the held session of this key (`listen.py`)."""
        capabilities, info = translate.declared(params)
        held = await self._sessions.get(pool, instance, principal, capabilities, info)
        announced = (await self._initialized(pool, instance)).get("capabilities")
        wanted = listen.honoured(params.get("notifications"), announced if isinstance(announced, dict) else {})
        return sse_response(await self._listener.open(held, message.id, wanted), {})

    async def _initialized(self, pool: str, instance: str) -> Mapping[str, Any]:
        """The instance's InitializeResult: kept in Redis, or learnt once (a session opened and closed)."""
        initialized = await self._eras.initialize_result(instance)
        if initialized is None:
            opened = await self._handshake.open(pool, instance, {}, translate.DEFAULT_CLIENT_INFO)
            await self._handshake.close(pool, instance, opened.sid, opened.version)
            initialized = opened.result
            await self._eras.keep_initialized(instance, initialized)
        return initialized

    async def _next_round(
        self, message: Message, method: str, params: Mapping[str, Any], principal: str
    ) -> Response:
        """A retry with `inputResponses` (mrtr §Basic Workflow): the answers go upstream as the
        responses its call waits for, and the call's stream is resumed after where it stopped."""
        name = rounds.name_of(method, params)
        round_ = self._sealer.open(params.get("requestState"), principal, method, name)
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
            (await self._send(held, json.dumps(reply).encode())).close()
        # 2025-11-25 transports §Resumability: the call's stream, from the event after the question.
        headers = self._handshake.headers(held.pool, held.sid, held.version)
        headers[protocol.H_LAST_EVENT_ID] = round_.last_event
        response = await self._upstream.send("GET", held.instance, headers, None)
        if response.status != 200 or not response.is_sse:
            response.close()
            raise errors.UpstreamError(f"Bad upstream answer: HTTP {response.status} resuming the call's stream")
        logs = translate.wants_logs(params)
        call = Call(message.id, method, round_.call, held, logs, principal, name)
        return await self._streamed(self._relay(response, call), call)

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

    def _send(self, held: Held, body: bytes) -> Awaitable[UpstreamResponse]:
        headers = self._handshake.headers(held.pool, held.sid, held.version)
        return self._upstream.send("POST", held.instance, headers, body)

    async def _refused(self, response: UpstreamResponse, call: Call) -> Response:
        """A non-200 upstream answer: its JSON-RPC error under the client's id, or a 502."""
        status = response.status
        answer = translate.answer_in(await response.read(self._max_body), False, call.upstream_id)
        if answer is None or "error" not in answer:
            raise errors.UpstreamError(f"Bad upstream answer: HTTP {status} to the bridged request")
        return _json_message({**answer, "id": call.client_id}, status)

    async def _relay(self, response: UpstreamResponse, call: Call) -> AsyncGenerator[bytes, None]:
        """The upstream's SSE answer as 2026-07-28 events; closing it early cancels upstream."""
        finished = False
        try:
            for _ in range(MAX_RESUMES + 1):
                last_id: str | None = None
                parser = sse.Parser(self._max_line)
                try:
                    async for chunk in response.chunks():
                        for event in parser.feed(chunk):
                            last_id = event.id or last_id
                            out = await self._event(event, call, last_id)
                            if out is None:
                                continue
                            yield out[0]
                            if out[1]:
                                finished = True
                                return
                finally:
                    response.close()
                if last_id is None:
                    break
                # 2025-11-25 transports §Resumability: the stream ended early; GET it again from its last id.
                headers = self._handshake.headers(call.held.pool, call.held.sid, call.held.version)
                headers[protocol.H_LAST_EVENT_ID] = last_id
                response = await self._upstream.send("GET", call.held.instance, headers, None)
                if response.status != 200 or not response.is_sse:
                    response.close()
                    break
            finished = True
            error = errors.UpstreamError("Upstream stream ended before the response").to_jsonrpc(call.client_id)
            yield sse.encode(json.dumps(error), event="message")
        except errors.UpstreamError as exc:
            finished = True
            yield sse.encode(json.dumps(exc.to_jsonrpc(call.client_id)), event="message")
        finally:
            if not finished:
                self._supervisor.spawn(self._cancel(call), name="bridge-cancel")

    async def _event(self, event: sse.Event, call: Call, last_id: str | None) -> tuple[bytes, bool] | None:
        """One upstream event for the client and whether it ends the client's response, or None
        (priming events, refused requests, messages for no one)."""
        if not event.data:
            return None
        try:
            message = json.loads(event.data)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        if "method" in message and "id" in message:
            if message["method"] in rounds.INPUT_METHODS and call.method in rounds.NAME_OF and last_id:
                return self._input_required(message, call, last_id), True
            await self._refuse_request(message, call)  # no event id: no retry could resume the call
            return None
        if "method" in message:
            if message["method"] == "notifications/message" and not call.logs:
                return None  # 2026-07-28 changelog: no log messages for a request without logLevel
            return sse.encode(json.dumps(message), event="message"), False
        if message.get("id") != call.upstream_id:
            return None
        answer = translate.client_response(message, call.method, call.client_id)
        return sse.encode(json.dumps(answer), event="message"), True

    def _input_required(self, request: Mapping[str, Any], call: Call, last_id: str) -> bytes:
        """The upstream asked the client something: an InputRequiredResult; the call goes on upstream."""
        key = rounds.input_key(request["id"])
        held = call.held
        state = self._sealer.seal(
            rounds.Round(
                principal=call.principal,
                method=call.method,
                name=call.name,
                pool=held.pool,
                instance=held.instance,
                digest=held.digest,
                call=call.upstream_id,
                asked={key: request["id"]},
                last_event=last_id,
                expires=self._sealer.expiry(),
            )
        )
        result = rounds.input_required({key: request}, state)
        message = {"jsonrpc": "2.0", "id": call.client_id, "result": result}
        return sse.encode(json.dumps(message), event="message")

    async def _refuse_request(self, message: Mapping[str, Any], call: Call) -> None:
        """A server-to-client request: answered with an error, so the upstream's call goes on."""
        error = {"code": REFUSED_CODE, "message": f"{message['method']} is not carried by the gateway's era bridge"}
        body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error}).encode()
        (await self._send(call.held, body)).close()

    async def _cancel(self, call: Call) -> None:
        """2025 basic/utilities/cancellation: the client went away; the upstream stops the request."""
        params = {"requestId": call.upstream_id, "reason": "the 2026-07-28 client closed the response"}
        body = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}).encode()
        try:
            (await self._send(call.held, body)).close()
        except errors.UpstreamError as exc:
            log.warning("could not cancel bridged request %s upstream: %s", call.upstream_id, exc)


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
