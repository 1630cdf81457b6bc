"""A scripted in-process MCP upstream for component tests (raw ASGI, no framework).

Real peers (the SDK server, server-everything) are used in tests/integration; this one exists
to produce the edge cases they never do on demand: SSE without event ids, streams that close
early (polling), malformed SSE, answers that never come, upstream 404s.

Tools (by `params.name` of tools/call):
  echo           -> JSON answer (or SSE when the upstream runs with sse=True)
  stream         -> SSE: `arguments.count` progress notifications `arguments.delay` s apart, then the result
  hang           -> SSE that never answers
  badsse         -> SSE with an endless line
  close_early    -> SSE that closes after `arguments.close_after` events (resumable if ids are on)
  html           -> 200 text/html (a wrong content type)
  orphan         -> SSE answering an id nobody asked, then the real answer
  burst          -> SSE: `arguments.count` progress notifications and the result, all in the
                    write after the headers' (they reach the gateway together)
  cookies        -> two Set-Cookie lines with the answer (JSON, or SSE with `arguments.sse`)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from tests.asgi_server import read_body

Scope = dict[str, Any]


@dataclass
class Behaviour:
    event_ids: bool = True  # give every SSE event an id (upstream resumability)
    sse: bool = False  # answer echo with SSE instead of JSON
    get_stream: bool = True  # serve the standalone GET stream (else 405)
    get_closes: bool = False  # end each standalone GET stream at once (no event, no id to resume from)
    priming: bool = False


@dataclass
class ScriptedUpstream:
    behaviour: Behaviour = field(default_factory=Behaviour)
    sessions: set[str] = field(default_factory=set)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    # stream id -> list of (event id, payload) for replay after Last-Event-ID
    streams: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    live: dict[str, asyncio.Queue[tuple[str, str] | None]] = field(default_factory=dict)
    disconnects: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.headers_seen.append(headers)
        method = scope["method"]
        if method == "POST":
            body = await read_body(receive)
            await self._post(headers, json.loads(body), send, receive)
        elif method == "GET":
            await self._get(headers, send, receive)
        elif method == "DELETE":
            self.sessions.discard(headers.get("mcp-session-id", ""))
            await _respond(send, 200, b"")
        else:
            await _respond(send, 405, b"")

    def _check_session(self, headers: dict[str, str]) -> bool:
        return headers.get("mcp-session-id", "") in self.sessions

    async def _post(self, headers: dict[str, str], message: Any, send: Any, receive: Any) -> None:
        self.requests.append(message)
        if isinstance(message, list):
            answers = [
                {"jsonrpc": "2.0", "id": m["id"], "result": {"echo": m.get("params")}}
                for m in message
                if "id" in m and "method" in m
            ]
            await _respond(
                send,
                200 if answers else 202,
                json.dumps(answers).encode() if answers else b"",
                "application/json",
            )
            return
        if message.get("method") == "initialize":
            sid = secrets.token_hex(8)
            self.sessions.add(sid)
            result = {
                "jsonrpc": "2.0",
                "id": message["id"],
                "result": {
                    "protocolVersion": message["params"].get("protocolVersion", "2025-03-26"),
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "scripted", "version": "1"},
                },
            }
            await _respond(
                send,
                200,
                json.dumps(result).encode(),
                "application/json",
                extra=[(b"mcp-session-id", sid.encode())],
            )
            return
        if not self._check_session(headers):
            await _respond(
                send,
                404,
                b'{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"nope"}}',
                "application/json",
            )
            return
        if "method" not in message or "id" not in message:
            await _respond(send, 202, b"")
            return
        name = (message.get("params") or {}).get("name")
        args = (message.get("params") or {}).get("arguments") or {}
        rid = message["id"]
        if name == "echo" and not self.behaviour.sse:
            body = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"echo": args}}).encode()
            await _respond(send, 200, body, "application/json")
            return
        events: list[str] = []
        delay = float(args.get("delay", 0.0))
        if name in ("stream", "close_early"):
            events = [
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": rid, "progress": i + 1},
                    }
                )
                for i in range(int(args.get("count", 3)))
            ]
        if name == "html":
            await _respond(send, 200, b"<html>not mcp</html>", "text/html")
            return
        if name == "cookies":  # e.g. a sticky load balancer's pair (AWSALB, AWSALBCORS)
            cookies = [(b"set-cookie", b"lb=1; Path=/"), (b"set-cookie", b"lbcors=1; Path=/; SameSite=None")]
            answer = json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"echo": args}})
            if not args.get("sse"):
                await _respond(send, 200, answer.encode(), "application/json", cookies)
                return
            sse_head = [(b"content-type", b"text/event-stream"), *cookies]
            await send({"type": "http.response.start", "status": 200, "headers": sse_head})
            await _send_event(send, "c-1", answer)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if name == "burst":
            payloads = [
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": rid, "progress": i + 1},
                    }
                )
                for i in range(int(args.get("count", 3)))
            ]
            payloads.append(json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"echo": args}}))
            await _start_sse(send)  # uvicorn writes the head, then the body: no await in between
            burst = "".join(f"id: burst-{i}\ndata: {payload}\n\n" for i, payload in enumerate(payloads, 1))
            await send({"type": "http.response.body", "body": burst.encode(), "more_body": False})
            return
        if name == "orphan":  # a response for an id nobody asked, then the real one
            events = [json.dumps({"jsonrpc": "2.0", "id": "nobody", "result": {}})]
        if name == "badsse":
            await _start_sse(send)
            await send({"type": "http.response.body", "body": b"data: " + b"x" * (2 << 20), "more_body": True})
            await _wait_disconnect(receive)
            return
        final = None if name == "hang" else json.dumps({"jsonrpc": "2.0", "id": rid, "result": {"echo": args}})
        close_after = int(args.get("close_after", 10**9)) if name == "close_early" else 10**9
        await self._serve_stream(send, receive, events, final, delay, close_after)

    async def _serve_stream(
        self, send: Any, receive: Any, events: list[str], final: str | None, delay: float, close_after: int
    ) -> None:
        stream = secrets.token_hex(4)
        log: list[tuple[str, str]] = []
        self.streams[stream] = log
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self.live[stream] = queue

        async def produce() -> None:
            for payload in [*events, *([final] if final else [])]:
                await asyncio.sleep(delay)
                item = (f"{stream}-{next(self._ids)}", payload)
                log.append(item)
                await queue.put(item)
            if final is not None:
                await queue.put(None)

        producer = asyncio.ensure_future(produce())
        await _start_sse(send)
        try:
            if self.behaviour.priming and self.behaviour.event_ids:
                await _send_event(send, f"{stream}-0", "", retry=50)
            sent = await _pump_queue(send, receive, queue, self.behaviour.event_ids, close_after)
            if sent < 0:
                self.disconnects += 1
        finally:
            self.live.pop(stream, None)
            # keep producing into the log so a resume can replay (disconnect is not cancellation)
            if close_after >= 10**9 and not producer.done():
                producer.cancel()

    async def _get(self, headers: dict[str, str], send: Any, receive: Any) -> None:
        if not self._check_session(headers):
            await _respond(send, 404, b"")
            return
        last = headers.get("last-event-id")
        if last is None:
            if not self.behaviour.get_stream:
                await _respond(send, 405, b"")
                return
            await _start_sse(send)
            if self.behaviour.get_closes:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await _wait_disconnect(receive)
            return
        stream = last.rsplit("-", 1)[0]
        log = self.streams.get(stream)
        if log is None:
            await _respond(send, 404, b"")
            return
        await _start_sse(send)
        index = next((i for i, (eid, _) in enumerate(log) if eid == last), -1)
        for eid, payload in log[index + 1 :]:
            await _send_event(send, eid, payload)
        done = any('"result"' in p for _, p in log)
        if not done:
            queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
            seen = {eid for eid, _ in log}
            while not any('"result"' in p for _, p in log):
                await asyncio.sleep(0.02)
                for eid, payload in log:
                    if eid not in seen:
                        seen.add(eid)
                        await _send_event(send, eid, payload)
            del queue
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _respond(
    send: Any,
    status: int,
    body: bytes,
    content_type: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    headers.extend(extra or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _start_sse(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )


async def _send_event(send: Any, eid: str | None, payload: str, retry: int | None = None) -> None:
    text = (f"id: {eid}\n" if eid else "") + (f"retry: {retry}\n" if retry else "") + f"data: {payload}\n\n"
    await send({"type": "http.response.body", "body": text.encode(), "more_body": True})


async def _wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _pump_queue(
    send: Any, receive: Any, queue: asyncio.Queue[tuple[str, str] | None], ids: bool, close_after: int
) -> int:
    """Send queued events; returns the count sent, or -1 when the client disconnected."""
    sent = 0
    disconnect = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        while sent < close_after:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if disconnect in done:
                getter.cancel()
                return -1
            item = getter.result()
            if item is None:
                break
            await _send_event(send, item[0] if ids else None, item[1])
            sent += 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return sent
    finally:
        disconnect.cancel()
