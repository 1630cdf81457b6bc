"""A "careful" raw Streamable HTTP client (httpx) that records every SSE event it sees.

Unlike the SDK client (2 reconnect attempts, 1 s default delay), it keeps resuming a broken
request stream with `GET` + `Mcp-Session-Id` + `Last-Event-ID: <newest id seen>` for up to
`resume_timeout` seconds with backoff, so tests can assert exactly-once, in-order delivery across
connection drops, replica deaths and load-balancer reshuffles.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

ACCEPT_BOTH = "application/json, text/event-stream"
DEFAULT_PROTOCOL_VERSION = "2025-11-25"


# ---------------------------------------------------------------- SSE parsing


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: str
    retry: int | None = None

    @property
    def is_priming(self) -> bool:
        """An event that carries only an id (and maybe retry): the 2025-11-25 priming event."""
        return self.data.strip() == ""

    def json(self) -> Any:
        return json.loads(self.data) if self.data.strip() else None


class SseParser:
    """Incremental text/event-stream parser (WHATWG rules, but id-only events are dispatched too)."""

    def __init__(self) -> None:
        self._buf = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._event: str | None = None
        self._retry: int | None = None
        self._has_fields = False
        self._pending_cr = False

    def feed(self, chunk: str) -> list[SseEvent]:
        if self._pending_cr and chunk.startswith("\n"):
            chunk = chunk[1:]
        self._pending_cr = chunk.endswith("\r")
        self._buf += chunk.replace("\r\n", "\n").replace("\r", "\n")
        out: list[SseEvent] = []
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            ev = self._line(line)
            if ev is not None:
                out.append(ev)
        return out

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            if not self._has_fields:
                return None
            ev = SseEvent(self._id, self._event, "\n".join(self._data), self._retry)
            self._data, self._id, self._event, self._retry, self._has_fields = [], None, None, None, False
            return ev
        if line.startswith(":"):
            return None  # comment / keepalive
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "event":
            self._event = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        else:
            return None
        self._has_fields = True
        return None


async def iter_sse(response: httpx.Response) -> AsyncIterator[SseEvent]:
    parser = SseParser()
    async for chunk in response.aiter_text():
        for ev in parser.feed(chunk):
            yield ev


# ---------------------------------------------------------------- client


class CarefulClientError(RuntimeError):
    pass


class SessionGone(CarefulClientError):
    """The server answered 404 for our Mcp-Session-Id."""


@dataclass
class ReceivedEvent:
    id: str | None
    data: str
    message: Any  # parsed JSON-RPC message, or None for priming events
    connection: int  # 0 = the POST, 1.. = resumption GETs
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)


@dataclass
class StreamResult:
    response: dict[str, Any]
    events: list[ReceivedEvent]
    connections: int
    statuses: list[int | str] = field(default_factory=list)

    def messages(self) -> list[dict[str, Any]]:
        return [e.message for e in self.events if isinstance(e.message, dict)]

    def progress(self) -> list[dict[str, Any]]:
        return [m["params"] for m in self.messages() if m.get("method") == "notifications/progress"]

    def event_ids(self) -> list[str]:
        """Ids of the events that carried data (a priming event repeats the cursor it resumes from)."""
        return [e.id for e in self.events if e.id is not None and e.data.strip()]


DropPredicate = Callable[[ReceivedEvent, list[ReceivedEvent]], bool]


class CarefulClient:
    def __init__(
        self,
        url: str,
        *,
        protocol_version: str = DEFAULT_PROTOCOL_VERSION,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        read_timeout: float | None = None,
    ) -> None:
        """`read_timeout` (default `timeout`) bounds silence on a stream; after it a resumable call
        reconnects (server-everything's resumed GETs can sit idle without live-tailing)."""
        self.url = url
        self.protocol_version = protocol_version
        self.session_id: str | None = None
        self.initialize_result: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=read_timeout or timeout))

    async def __aenter__(self) -> CarefulClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    def headers(
        self, *, accept: str = ACCEPT_BOTH, last_event_id: str | None = None, post: bool = True
    ) -> dict[str, str]:
        h = {"accept": accept}
        if post:
            h["content-type"] = "application/json"
        if self.session_id:
            h["mcp-session-id"] = self.session_id
        if self.initialize_result is not None:
            h["mcp-protocol-version"] = self.protocol_version
        if last_event_id is not None:
            h["last-event-id"] = last_event_id
        return h

    def next_id(self) -> int:
        return next(self._ids)

    # -------------------------------------------------------- simple request/response

    async def request(
        self, method: str, params: dict[str, Any] | None = None, request_id: int | str | None = None
    ) -> dict[str, Any]:
        """POST one request and return its JSON-RPC response (JSON body or SSE stream); no resumption."""
        rid = self.next_id() if request_id is None else request_id
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        async with self.http.stream("POST", self.url, json=msg, headers=self.headers()) as resp:
            if resp.status_code == 404:
                raise SessionGone(f"POST {method}: 404 {await resp.aread()!r}")
            if resp.status_code >= 400:
                raise CarefulClientError(f"POST {method}: {resp.status_code} {await resp.aread()!r}")
            if method == "initialize" and (sid := resp.headers.get("mcp-session-id")):
                self.session_id = sid
            ctype = resp.headers.get("content-type", "")
            if ctype.startswith("application/json"):
                body = json.loads(await resp.aread())
                if not isinstance(body, dict):
                    raise CarefulClientError(f"POST {method}: non-object JSON body {body!r}")
                return body
            async for ev in iter_sse(resp):
                m = ev.json()
                if isinstance(m, dict) and m.get("id") == rid and ("result" in m or "error" in m):
                    return m
        raise CarefulClientError(f"POST {method}: stream ended without a response")

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> int:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        resp = await self.http.post(self.url, json=msg, headers=self.headers())
        return resp.status_code

    async def initialize(self) -> dict[str, Any]:
        """initialize + notifications/initialized; stores the session id and negotiated version."""
        resp = await self.request(
            "initialize",
            {
                "protocolVersion": self.protocol_version,
                "capabilities": {},
                "clientInfo": {"name": "careful-client", "version": "0"},
            },
        )
        if "error" in resp:
            raise CarefulClientError(f"initialize failed: {resp['error']}")
        result: dict[str, Any] = resp["result"]
        self.initialize_result = result
        self.protocol_version = result["protocolVersion"]
        status = await self.notify("notifications/initialized")
        if status != 202:
            raise CarefulClientError(f"notifications/initialized answered {status}")
        return result

    async def delete_session(self) -> int:
        resp = await self.http.delete(self.url, headers=self.headers(post=False))
        return resp.status_code

    # -------------------------------------------------------- resumable call

    async def call_tool_resumable(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        drop_when: DropPredicate | None = None,
        resume_timeout: float = 15.0,
        resume_url: str | None = None,
        progress_token: str | int | None = None,
        resume_delay: float = 0.0,
        request_id: int | None = None,
    ) -> StreamResult:
        """tools/call with a progress token, surviving broken streams.

        `drop_when(event, events_so_far)` returning True makes the client close the current
        connection itself right after recording `event` (simulates a network break). It is asked
        for every event on every connection: check `event.connection` to drop only once. Resumption
        GETs go to `resume_url` (default: the same URL), the first one after `resume_delay` s.
        `request_id` repeats an id already sent (a replay of the same call, for the replay tests).
        """
        rid = self.next_id() if request_id is None else request_id
        token = progress_token if progress_token is not None else f"p-{rid}"
        msg = {
            "jsonrpc": "2.0",
            "id": rid,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments or {}, "_meta": {"progressToken": token}},
        }
        events: list[ReceivedEvent] = []
        statuses: list[int | str] = []
        last_id: str | None = None
        retry_ms: int | None = None
        connection = 0

        async def consume(resp: httpx.Response) -> dict[str, Any] | None:
            nonlocal last_id, retry_ms
            ctype = resp.headers.get("content-type", "")
            if ctype.startswith("application/json"):
                body = json.loads(await resp.aread())
                events.append(ReceivedEvent(None, json.dumps(body), body, connection))
                return body if isinstance(body, dict) else None
            async for ev in iter_sse(resp):
                if ev.retry is not None:
                    retry_ms = ev.retry
                if ev.id is not None:
                    last_id = ev.id
                rec = ReceivedEvent(ev.id, ev.data, ev.json(), connection)
                events.append(rec)
                m = rec.message
                if isinstance(m, dict) and m.get("id") == rid and ("result" in m or "error" in m):
                    return m
                if drop_when is not None and drop_when(rec, events):
                    return None  # leaving the `async with` closes the connection
            return None

        try:
            async with self.http.stream("POST", self.url, json=msg, headers=self.headers()) as resp:
                statuses.append(resp.status_code)
                if resp.status_code == 404:
                    raise SessionGone(f"tools/call POST: 404 {await resp.aread()!r}")
                if resp.status_code >= 400:
                    raise CarefulClientError(f"tools/call POST: {resp.status_code} {await resp.aread()!r}")
                final = await consume(resp)
                if final is not None:
                    return StreamResult(final, events, connection + 1, statuses)
        except (httpx.TransportError, httpx.StreamError) as exc:
            statuses.append(type(exc).__name__)

        await asyncio.sleep(resume_delay)
        deadline = time.monotonic() + resume_timeout
        delay = 0.05
        while True:
            if last_id is None:
                raise CarefulClientError(f"stream broke before any event id arrived; events={events!r}")
            if time.monotonic() > deadline:
                raise CarefulClientError(
                    f"could not resume within {resume_timeout}s (statuses {statuses}); events={events!r}"
                )
            connection += 1
            try:
                async with self.http.stream(
                    "GET",
                    resume_url or self.url,
                    headers=self.headers(accept="text/event-stream", last_event_id=last_id, post=False),
                ) as resp:
                    statuses.append(resp.status_code)
                    if resp.status_code == 404:
                        raise SessionGone(f"resumption GET: 404 {await resp.aread()!r}")
                    if resp.status_code == 200:
                        got_before = len(events)
                        final = await consume(resp)
                        if final is not None:
                            return StreamResult(final, events, connection + 1, statuses)
                        if len(events) > got_before:
                            delay = 0.05  # progress was made; reconnect promptly
                    else:
                        await resp.aread()
            except (httpx.TransportError, httpx.StreamError) as exc:
                statuses.append(type(exc).__name__)
            hint = retry_ms / 1000 if retry_ms is not None else 0.0
            await asyncio.sleep(min(max(delay, hint), 1.0))
            delay = min(delay * 2, 1.0)
