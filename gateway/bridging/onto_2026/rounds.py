"""One bridged POST's SSE, produced round by round: the upstream's notifications and final answer
(in 2025 shape), and for an input-required result (SEP-2322, basic/patterns/mrtr) the matching
2025 server-to-client requests, the wait for the client's answers, and the retry upstream with
`inputResponses` and `requestState`, until a final answer.

The relay's pump reads it as it reads an upstream SSE response (`BridgedStream`), so every event
goes into the session's event log first and the client resumes it on any replica. Every round of
one request goes to the same upstream instance (a server may seal `requestState` with a key of its
own process). The events carry no upstream event ids: when this replica dies, the replica that
adopts the stream cannot resume it (2026-07-28 has cancelled the request) and answers the
request's id with an error (`streams/pump.py`), so the client never hangs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.bridging.onto_2026 import translate
from gateway.bridging.onto_2026.answers import Answers, input_id
from gateway.bridging.onto_2026.calls import Caller, Reply
from gateway.upstream.client import UpstreamResponse
from gateway.wire import protocol, sse
from gateway.wire.answers import error_message
from gateway.wire.protocol import Message

log = logging.getLogger(__name__)

# The gateway's own answer to a request it serves itself (None: the upstream's to answer).
Local = Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any] | None]]
MAX_ROUNDS = 16  # input-required rounds of one request before the gateway gives up
CANCEL_CHECK = 1.0  # s between looks for the client's notifications/cancelled while a call runs


@dataclass(frozen=True)
class Call:
    """Where and as whom a bridged request runs."""

    session: str
    pool: str
    instance: str
    headers: Mapping[str, str]  # the client's headers that cross (credentials, traceparent)
    init: Mapping[str, Any]  # the client's initialize params: its info and capabilities
    stream: str  # the client's stream: named in the input requests' ids
    input_timeout: float  # how long the client has to answer one round
    log_level: str | None = None  # the client's logging/setLevel, for each request's _meta


class Rounds:
    """The SSE events of one bridged POST (its requests one after another: a 2025-03-26 batch)."""

    def __init__(self, caller: Caller, answers: Answers, call: Call, max_line: int, local: Local) -> None:
        self._local = local
        self._caller = caller
        self._answers = answers
        self._call = call
        self._max_line = max_line
        self.open: UpstreamResponse | None = None  # the upstream stream being read (closed with us)
        self._cancelled = False  # the client cancelled the request being read

    def close(self) -> None:
        if self.open is not None:
            self.open.close()

    async def events(self, requests: Sequence[Message], first: Reply | None) -> AsyncIterator[bytes]:
        for index, request in enumerate(requests):
            async for event in self._request(request, first if index == 0 else None):
                yield event

    async def _request(self, request: Message, first: Reply | None) -> AsyncIterator[bytes]:
        own = await self._local(self._call.session, request.raw)
        if own is not None:  # answered by the gateway (resources/subscribe, unsubscribe)
            yield sse.encode(json.dumps(own))
            return
        sent = translate.upstream_message(request.raw, self._call.init, request.id, self._call.log_level)
        for round_ in range(MAX_ROUNDS + 1):
            try:
                reply = first or await self._caller.send(
                    self._call.pool, self._call.instance, self._call.headers, sent, self._call.init
                )
            except errors.GatewayError as exc:
                yield sse.encode(error_message(request.id, exc.message))
                return
            first = None
            answer: dict[str, Any] | None = reply.message
            if reply.stream is not None:
                answer = None
                async for item in self._read(reply.stream, sent["id"], request.id):
                    if isinstance(item, bytes):
                        yield item
                    else:
                        answer = item
            if self._cancelled:
                # `_read` closed the upstream request (2026-07-28 cancellation); the 2025 client
                # ignores an answer to a request it cancelled, and the stream ends with one.
                self._cancelled = False
                yield sse.encode(error_message(request.id, "Request cancelled by the client"))
                return
            if answer is None:
                return  # the upstream ended without answering: the pump answers the id with an error
            if not translate.is_input_required(answer):
                yield sse.encode(json.dumps(translate.to_2025(answer, request.id)))
                return
            if round_ == MAX_ROUNDS:
                break
            asked = translate.input_requests(answer)
            ids = {key: input_id(self._call.stream, round_, key) for key in asked}
            for key, ask in asked.items():
                # The 2025 form of each input request: a server-to-client request on this stream.
                message = {"jsonrpc": "2.0", "id": ids[key], "method": ask["method"], "params": ask.get("params", {})}
                yield sse.encode(json.dumps(message))
            got = await self._answers.collect(
                self._call.session, self._call.stream, ids.values(), self._call.input_timeout
            )
            responses: dict[str, Any] = {}
            for key, asked_id in ids.items():
                given = got.get(asked_id)
                if given is None or "result" not in given:
                    why = "no answer in time" if given is None else str((given.get("error") or {}).get("message"))
                    yield sse.encode(error_message(request.id, f"Input request {key!r} failed: {why}"))
                    return
                responses[key] = given["result"]
            if await self._answers.cancelled(self._call.session, self._call.stream, request.id):
                yield sse.encode(error_message(request.id, "Request cancelled by the client"))
                return
            sent = translate.retry_message(
                sent, f"{request.id}~{round_ + 1}", responses, translate.request_state(answer)
            )
        yield sse.encode(error_message(request.id, f"Upstream asked for input more than {MAX_ROUNDS} times"))

    async def _read(
        self, response: UpstreamResponse, answer_id: Any, client_id: Any
    ) -> AsyncIterator[bytes | dict[str, Any]]:
        """The upstream stream's notifications (as events to relay) and its answer (a dict); ends
        without an answer when the client cancelled the request (the upstream connection closes:
        2026-07-28 basic/patterns/cancellation) or the upstream ended the stream."""
        self.open = response
        parser = sse.Parser(self._max_line)
        looked = time.monotonic()
        try:
            while True:
                try:
                    chunk = await response.next_chunk(max(looked + CANCEL_CHECK - time.monotonic(), 0.0))
                except TimeoutError:
                    chunk = b""
                if chunk is None:
                    return
                if time.monotonic() - looked >= CANCEL_CHECK:
                    looked = time.monotonic()
                    if await self._answers.cancelled(self._call.session, self._call.stream, client_id):
                        self._cancelled = True
                        return
                for event in parser.feed(chunk):
                    if not event.data:
                        continue
                    try:
                        message = json.loads(event.data)
                    except ValueError:
                        continue
                    if not isinstance(message, dict):
                        continue
                    if "method" not in message and message.get("id") == answer_id:
                        yield message
                        return
                    if "id" not in message:  # notifications (progress, logs) cross as they are
                        yield sse.encode(event.data)
        except (errors.UpstreamError, sse.SSEError) as exc:
            log.info("bridged upstream stream broke: %s", exc)
        finally:
            response.close()
            self.open = None


class BridgedStream(UpstreamResponse):
    """The bridge's SSE as the pump reads an upstream response (the pump logs, the relay delivers);
    `on_close` closes the upstream response the events are being read from, if any."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:  # no connection
        self.status = 200
        self.headers = {}
        self.content_type = protocol.SSE
        self._on_close = on_close
        self._events = events
        self._closed = False

    def take_buffered(self) -> bytes:
        return b""

    def forget_headers(self) -> None:
        return None

    async def next_chunk(self, timeout: float) -> bytes | None:
        if self._closed:
            return None
        return await asyncio.wait_for(anext(self._events, None), timeout)

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.next_chunk(3600.0)) is not None:
            yield chunk

    async def read(self, limit: int) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def close(self) -> None:
        self._closed = True
        self._on_close()  # the upstream sees its request's connection close: cancelled
