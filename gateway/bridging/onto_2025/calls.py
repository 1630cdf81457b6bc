"""One bridged call's upstream SSE stream, relayed to the 2026-07-28 client.

Progress and the request's log messages pass as they come; the upstream's response, under the
client's id, ends the client's stream. A server-to-client request (`elicitation/create`,
`sampling/createMessage`, `roots/list`) ends it with an InputRequiredResult whose sealed state says
where the call's stream stopped (`rounds.py`); the call goes on upstream. Closing the client's
stream before either sends `notifications/cancelled` upstream (2026-07-28 basic/transports: closing
the response cancels the request; a 2025 server stops only on the notification).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.bridging.onto_2025 import rounds, translate
from gateway.bridging.onto_2025.handshake import Handshake
from gateway.bridging.onto_2025.pending import OpenRounds
from gateway.bridging.onto_2025.rounds import Sealer
from gateway.bridging.onto_2025.sessions import Held, HeldSessions
from gateway.supervisor import Supervisor
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.wire import protocol, sse

log = logging.getLogger("gateway.bridging.onto_2025.calls")

MAX_RESUMES = 5  # an upstream that closes the stream early (SSE polling) is asked again this often
# s of silence on a resumed upstream stream before it is asked again from the last event id: the mcp
# 2.3.0 server stores but never sends an event made while a resumed GET replays, and server-everything
# never live-tails a resumed GET (docs/interoperability.md, "Known peer behaviour")
REPOLL = 2.0


class _Silence(Exception):
    """A resumed upstream stream said nothing for REPOLL seconds."""


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


class CallStreams:
    def __init__(
        self,
        *,
        upstream: UpstreamClient,
        handshake: Handshake,
        sealer: Sealer,
        open_rounds: OpenRounds,
        sessions: HeldSessions,
        supervisor: Supervisor,
        max_line: int,
    ) -> None:
        self._open_rounds = open_rounds
        self._sessions = sessions
        self._upstream = upstream
        self._handshake = handshake
        self._sealer = sealer
        self._supervisor = supervisor
        self._max_line = max_line

    def send(self, held: Held, body: bytes) -> Awaitable[UpstreamResponse]:
        """A POST on the held session (not a coroutine of its own: the client's send, as it is)."""
        headers = self._handshake.headers(held.pool, held.sid, held.version)
        return self._upstream.send("POST", held.instance, headers, body)

    async def resume(self, held: Held, last_id: str) -> UpstreamResponse | None:
        """2025-11-25 transports §Resumability: the call's stream after `last_id` (None: not resumable)."""
        headers = self._handshake.headers(held.pool, held.sid, held.version)
        headers[protocol.H_LAST_EVENT_ID] = last_id
        response = await self._upstream.send("GET", held.instance, headers, None)
        if response.status != 200 or not response.is_sse:
            response.close()
            return None
        return response

    async def relay(
        self, response: UpstreamResponse, call: Call, resumed_from: str | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The upstream's SSE answer as 2026-07-28 events; closing it early cancels upstream.
        `resumed_from`: the event id `response` resumes after (a retry's round), else None."""
        finished = False
        last_id = resumed_from
        repoll = REPOLL if resumed_from is not None else None
        ends = 0
        try:
            while True:
                parser = sse.Parser(self._max_line)
                silent = False
                try:
                    try:
                        async for chunk in self._chunks(response, call, repoll):
                            for event in parser.feed(chunk):
                                last_id = event.id or last_id
                                out = await self._event(event, call, last_id)
                                if out is None:
                                    continue
                                yield out[0]
                                if out[1]:
                                    finished = True
                                    return
                    except _Silence:
                        silent = True
                finally:
                    response.close()
                if last_id is None:
                    break
                if not silent:
                    ends += 1  # the upstream ended the stream early
                    if ends > MAX_RESUMES:
                        break
                resumed = await self.resume(call.held, last_id)
                if resumed is None:
                    break
                response, repoll = resumed, REPOLL
            finished = True
            error = errors.UpstreamError("Upstream stream ended before the response").to_jsonrpc(call.client_id)
            yield sse.encode(json.dumps(error), event="message")
        except errors.UpstreamError as exc:
            finished = True
            yield sse.encode(json.dumps(exc.to_jsonrpc(call.client_id)), event="message")
        finally:
            if not finished:
                self._supervisor.spawn(self._cancel(call), name="bridge-cancel")

    async def _chunks(self, response: UpstreamResponse, call: Call, repoll: float | None) -> AsyncIterator[bytes]:
        """The stream's bytes; the held session is marked in use while they come (or while the
        upstream works in silence), so a call longer than the idle bound keeps its session.
        `repoll`: raise _Silence after this long without bytes (a resumed stream)."""
        loop = asyncio.get_running_loop()
        every = self._sessions.idle / 4
        wait = every if repoll is None else min(every, repoll)
        touched = heard = loop.time()
        while True:
            try:
                chunk = await response.next_chunk(wait)
            except TimeoutError:
                chunk = b""
            if chunk is None:
                return
            now = loop.time()
            if now - touched >= every:
                touched = now
                await self._sessions.touch(call.held)
            if chunk:
                heard = now
                yield chunk
            elif repoll is not None and now - heard >= repoll:
                raise _Silence

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
                return await self._input_required(message, call, last_id), True
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

    async def _input_required(self, request: Mapping[str, Any], call: Call, last_id: str) -> bytes:
        """The upstream asked the client something: an InputRequiredResult; the call goes on upstream."""
        key = rounds.input_key(request["id"])
        held = call.held
        round_ = rounds.Round(
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
        await self._open_rounds.opened(round_)
        await self._sessions.keep_until(held, round_.expires)  # the retry may come that late
        result = rounds.input_required({key: request}, self._sealer.seal(round_))
        message = {"jsonrpc": "2.0", "id": call.client_id, "result": result}
        return sse.encode(json.dumps(message), event="message")

    async def _refuse_request(self, message: Mapping[str, Any], call: Call) -> None:
        """A server-to-client request: answered with an error, so the upstream's call goes on."""
        error = {"code": REFUSED_CODE, "message": f"{message['method']} is not carried by the gateway's era bridge"}
        body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": error}).encode()
        (await self.send(call.held, body)).close()

    async def _cancel(self, call: Call) -> None:
        await self.cancel(call.held, call.upstream_id, "the 2026-07-28 client closed the response")

    async def cancel(self, held: Held, upstream_id: str, reason: str) -> None:
        """2025 basic/utilities/cancellation: the client went away; the upstream stops the request."""
        params = {"requestId": upstream_id, "reason": reason}
        body = json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}).encode()
        try:
            (await self.send(held, body)).close()
        except errors.UpstreamError as exc:
            log.warning("could not cancel bridged request %s upstream: %s", upstream_id, exc)
