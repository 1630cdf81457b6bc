"""Legacy HTTP+SSE transport (2024-11-05) bridged onto the gateway's Streamable HTTP endpoint.

`GET /sse[/{pool}]` opens the client's event stream: first `event: endpoint` with
`/messages?session_id=<B>` (B: a bridge id from the same generator as gateway session ids), then
every message for the client as `event: message`. `POST /messages?session_id=<B>` takes one
JSON-RPC message, answers 202 at once and forwards it in the background, in process, through the
app's own `/mcp` route (guard, sessions, affinity, pumps and resumable streams all apply); every
message of the answer is appended to the Redis stream `{prefix}:{legacy:B}:out`, which the `/sse`
connection tails with `XREAD BLOCK`. The bridge record `{prefix}:{legacy:B}:bridge` (pool,
principal, gateway session id, negotiated version) lives in Redis too, so a POST may land on any
replica. The `/sse` replica also relays the session's standalone GET stream once initialized.
Closing `/sse` ends the session (the transport has no DELETE): the bridge DELETEs its gateway session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message

from gateway import errors
from gateway.asgi.responses import SSE_HEADERS, error_response, read_body
from gateway.asgi.streaming import SSEResponse
from gateway.store.client import translated
from gateway.wire import protocol, sse
from gateway.wire.answers import answered_ids

log = logging.getLogger("gateway.eras.legacy_sse")

BRIDGE_TTL = 3600  # seconds; refreshed while the /sse connection lives
OUT_MAXLEN = 10000
KEEPALIVE_MS = 15000
MAX_POLLS = 20  # GET + Last-Event-ID follow-ups of one answer's stream before giving up with an error
# W3C trace context too: a traced POST /messages continues into the /mcp request it becomes
FORWARDED = ("authorization", "origin", "x-forwarded-for", "user-agent", "traceparent", "tracestate")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _path(record: Mapping[str, str]) -> str:
    """The Streamable HTTP route of the bridge's pool."""
    return f"/mcp/{record['pool']}" if record.get("pool") else "/mcp"


async def _inner(
    request: Request, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], AsyncGenerator[bytes, None]]:
    """Call this app in process (streaming); the body iterator's close disconnects the call."""
    app: ASGIApp = request.app
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
    }
    sent: asyncio.Queue[Message] = asyncio.Queue()
    gone = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await sent.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await sent.put({"type": "http.response.body", "body": b"", "more_body": False})

    task = request.app.state.gateway.supervisor.spawn(run(), name=f"legacy-inner-{method}")
    start = await sent.get()
    if start["type"] != "http.response.start":
        raise errors.GatewayError("Internal error: no response from the Streamable HTTP endpoint")
    response_headers = {_text(k).lower(): _text(v) for k, v in start.get("headers", [])}

    async def chunks() -> AsyncGenerator[bytes, None]:
        try:
            while True:
                message = await sent.get()
                if message.get("body"):
                    yield bytes(message["body"])
                if not message.get("more_body", False):
                    return
        finally:
            gone.set()
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(task, 5)

    return int(start["status"]), response_headers, chunks()


async def _messages(
    status: int, headers: Mapping[str, str], body: AsyncIterator[bytes], cursor: list[str] | None = None
) -> AsyncIterator[str]:
    """Each JSON-RPC message (as JSON text) of an answer from /mcp, SSE or JSON, as it arrives;
    the newest SSE event id goes to `cursor[0]`, for following a stream the gateway ended."""
    if protocol.SSE in headers.get("content-type", ""):
        parser = sse.Parser()
        async for chunk in body:
            for event in parser.feed(chunk):
                if event.id and cursor is not None:
                    cursor[:] = [event.id]
                if event.data:
                    yield event.data
        return
    payload = b"".join([c async for c in body])
    if payload.strip():
        parsed = json.loads(payload)
        for message in parsed if isinstance(parsed, list) else [parsed]:
            yield json.dumps(message)


class LegacyBridge:
    """The two routes of the old transport; state in the gateway's Redis, so any replica serves."""

    def _gateway(self, request: Request) -> Any:
        return request.app.state.gateway

    def _headers(
        self, request: Request, record: Mapping[str, str], accept: str, last_event_id: str | None = None
    ) -> dict[str, str]:
        headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
        headers["accept"] = accept
        if record.get("sid"):
            headers[protocol.H_SESSION] = record["sid"]
        if record.get("version") in protocol.SESSIONFUL_VERSIONS:
            headers[protocol.H_VERSION] = record["version"]
        if last_event_id:
            headers[protocol.H_LAST_EVENT_ID] = last_event_id
        return headers

    async def _record(self, gateway: Any, key: str) -> dict[str, str]:
        with translated():
            return {_text(k): _text(v) for k, v in (await gateway.redis.hgetall(key)).items()}

    async def _append(self, gateway: Any, out: str, data: str) -> None:
        with translated():
            async with gateway.redis.pipeline(transaction=False) as pipe:  # one round trip
                pipe.xadd(out, {"data": data}, maxlen=OUT_MAXLEN, approximate=True)
                pipe.expire(out, BRIDGE_TTL)
                pipe.spublish(gateway.keys.legacy_notify(out), b"1")  # wakes the /sse reader's tail
                await pipe.execute()

    # --- GET /sse -------------------------------------------------------------------------------

    async def sse_endpoint(self, request: Request) -> Response:
        gateway = self._gateway(request)
        try:
            await gateway.guard.admit(request)
            gateway.pools.get(request.path_params.get("pool"))  # unknown pool -> 404 now
            bridge = protocol.new_session_id()
            key, out = gateway.keys.legacy(bridge)
            record = {"pool": request.path_params.get("pool") or "", "principal": request.state.principal}
            with translated():
                async with gateway.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(key, mapping=record)
                    pipe.expire(key, BRIDGE_TTL)
                    await pipe.execute()
        except errors.GatewayError as exc:
            return error_response(exc)
        endpoint = f"{request.scope.get('root_path', '')}/messages?session_id={bridge}"
        return SSEResponse(self._stream(request, key, out, endpoint), SSE_HEADERS)

    async def _stream(self, request: Request, key: str, out: str, endpoint: str) -> AsyncIterator[bytes]:
        gateway = self._gateway(request)
        standalone: asyncio.Task[None] | None = None
        cursor = "0-0"
        try:
            yield sse.encode(endpoint, event="endpoint")
            async with gateway.relay.tail.listening(gateway.keys.legacy_notify(out)) as outbox:
                while not gateway.relay.draining.is_set():
                    seen = outbox.seq  # before the read: a message added after it wakes the wait
                    with translated():
                        entries = await gateway.redis.xrange(out, min=f"({cursor}", count=100)
                    if not entries:
                        await outbox.wait(seen, KEEPALIVE_MS / 1000)
                        if outbox.seq == seen:
                            yield sse.comment("keep-alive")
                        continue
                    for entry_id, fields in entries:
                        cursor = _text(entry_id)
                        yield sse.encode(_text(fields[b"data"]), event="message")
                    with translated():
                        await gateway.redis.expire(key, BRIDGE_TTL)
                    if standalone is None:
                        record = await self._record(gateway, key)
                        if record.get("sid"):
                            standalone = gateway.supervisor.spawn(
                                self._standalone(request, record, out), name="legacy-standalone"
                            )
        except errors.StoreError as exc:
            log.warning("legacy /sse stream ended: %s", exc)  # the client reconnects with a new GET /sse
        finally:
            if standalone is not None:
                standalone.cancel()
            await asyncio.shield(self._close(request, key, out))

    async def _standalone(self, request: Request, record: Mapping[str, str], out: str) -> None:
        """Relay the session's standalone GET stream (server-initiated messages), resuming it."""
        gateway = self._gateway(request)
        cursor: list[str] = []
        while True:
            headers = self._headers(request, record, protocol.SSE, cursor[0] if cursor else None)
            status, response_headers, body = await _inner(request, "GET", _path(record), headers)
            if status != 200:
                await body.aclose()
                return  # e.g. 405: the upstream offers no standalone stream
            async for data in _messages(status, response_headers, body, cursor):
                await self._append(gateway, out, data)
            await asyncio.sleep(1.0)

    async def _close(self, request: Request, key: str, out: str) -> None:
        gateway = self._gateway(request)
        with contextlib.suppress(Exception):
            record = await self._record(gateway, key)
            await gateway.redis.delete(key, out)
            if record.get("sid"):
                _, _, body = await _inner(request, "DELETE", _path(record), self._headers(request, record, "*/*"))
                await body.aclose()

    # --- POST /messages -------------------------------------------------------------------------

    async def messages_endpoint(self, request: Request) -> Response:
        gateway = self._gateway(request)
        try:
            await gateway.guard.admit(request)
            bridge = request.query_params.get("session_id")
            if not bridge:
                raise errors.InvalidRequest("Bad Request: session_id query parameter is required")
            key, out = gateway.keys.legacy(bridge)
            record = await self._record(gateway, key)
            if not record or record.get("principal", "") != request.state.principal:
                raise errors.SessionNotFound("Could not find session")
            raw = await read_body(request, gateway.settings.max_body_bytes)
            try:
                message = json.loads(raw)
            except ValueError as exc:
                raise errors.ParseError("Parse error: body is not JSON") from exc
            if not isinstance(message, dict):
                raise errors.InvalidRequest("Invalid Request: one JSON-RPC message per POST")
        except errors.GatewayError as exc:
            return error_response(exc)
        # the forward outlives the 202; the app's supervisor owns it (cancelled and awaited on shutdown)
        gateway.supervisor.spawn(
            self._forward(request, key, out, record, message, raw), name=f"legacy-forward-{bridge[:8]}"
        )
        return Response("Accepted", status_code=202)

    async def _forward(
        self, request: Request, key: str, out: str, record: dict[str, str], message: dict[str, Any], raw: bytes
    ) -> None:
        gateway = self._gateway(request)
        path = _path(record)
        headers = self._headers(request, record, f"{protocol.JSON}, {protocol.SSE}")
        headers["content-type"] = protocol.JSON
        request_id = message.get("id") if "method" in message else None
        try:
            status, response_headers, body = await _inner(request, "POST", path, headers, raw)
            cursor: list[str] = []
            answers = _messages(status, response_headers, body, cursor)
            if message.get("method") == "initialize" and status == 200:
                collected = [m async for m in answers]
                parsed: list[dict[str, Any]] = [json.loads(m) for m in collected]
                result = next((m.get("result") for m in parsed if m.get("id") == request_id), None) or {}
                sid = response_headers.get(protocol.H_SESSION, "")
                await gateway.redis.hset(key, mapping={"sid": sid, "version": str(result.get("protocolVersion", ""))})
                for data in collected:
                    await self._append(gateway, out, data)
                return
            answered = False
            for _ in range(MAX_POLLS):
                async for data in answers:
                    await self._append(gateway, out, data)
                    answered = answered or request_id in answered_ids(data)
                if answered or request_id is None or not cursor:
                    return
                # 2025-11-25 §Resumability: the stream ended before the answer (the upstream's polling
                # close, a drain): poll it with GET + Last-Event-ID, as a Streamable HTTP client would.
                status, response_headers, body = await _inner(
                    request, "GET", path, self._headers(request, record, protocol.SSE, cursor[0])
                )
                if status != 200:
                    await body.aclose()
                    break
                answers = _messages(status, response_headers, body, cursor)
            raise errors.UpstreamError("the answer's stream ended without the answer")
        except Exception as exc:  # the client must get an answer for its request, never silence
            log.warning("legacy bridge: forwarding failed: %r", exc)
            if request_id is not None:
                error = errors.UpstreamError(f"Bridge error: {exc}").to_jsonrpc(request_id)
                with contextlib.suppress(Exception):
                    await self._append(gateway, out, json.dumps(error))


def install(app: Any) -> LegacyBridge:
    """Add `GET /sse`, `GET /sse/{pool}` and `POST /messages` to a gateway app."""
    bridge = LegacyBridge()
    app.add_route("/sse", bridge.sse_endpoint, methods=["GET"])
    app.add_route("/sse/{pool}", bridge.sse_endpoint, methods=["GET"])
    app.add_route("/messages", bridge.messages_endpoint, methods=["POST"])
    return bridge
