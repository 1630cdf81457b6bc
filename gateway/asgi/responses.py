"""Responses shared by the eras: JSON-RPC error bodies, SSE framing, request bodies, stream slots."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway import errors
from gateway.asgi.streaming import SSEResponse
from gateway.store.limits import Limiter
from gateway.wire import protocol

# transports: SSE must not be buffered or cached by proxies in between (names lower-case: merged last)
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def error_response(exc: errors.GatewayError, request_id: errors.JsonRpcId = None) -> Response:
    return Response(
        json.dumps(exc.to_jsonrpc(request_id)),
        status_code=exc.status,
        media_type=protocol.JSON,
        headers=exc.headers,
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused past `limit` bytes as it arrives. Read from `receive` itself, not
    through starlette's `stream()` (an async generator per request, each registered with the loop),
    and kept where starlette's `body()` and `stream()` find it, so a second read (the id peek of
    an error answer) gets it again instead of waiting on `receive` for a body already read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
    kept: bytes | None = getattr(request, "_body", None)
    if kept is not None:
        if len(kept) > limit:
            raise errors.PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
        return kept
    if getattr(request, "_stream_consumed", False):
        raise RuntimeError("Stream consumed")  # as starlette's stream(): read elsewhere, not kept
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.PayloadTooLarge(f"Payload Too Large: body exceeds {limit} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._stream_consumed = True  # starlette's own state: its body() and stream() see a read body
    request._body = body
    return body


class ClientHeaders(dict[str, str]):
    """An upstream answer's headers for the client (lower-case names), with its `Set-Cookie`
    lines apart in `cookies`: each must stay a line of its own (RFC 9110 §5.3), which a dict
    cannot hold. Every response built from these writes them (`with_cookies`)."""

    __slots__ = ("cookies",)

    def __init__(self, headers: dict[str, str], cookies: list[str]) -> None:
        super().__init__(headers)
        self.cookies = cookies


def client_headers(upstream: Mapping[str, str], session_id: str | None) -> ClientHeaders:
    pairs: Iterable[tuple[str, str]] = upstream.items()
    cookies: list[str] = []
    if "set-cookie" in upstream:  # (a case-insensitive multidict, from the upstream client)
        cookies = [protocol.field_value(v) for k, v in pairs if k.lower() == "set-cookie"]
        pairs = [(k, v) for k, v in upstream.items() if k.lower() != "set-cookie"]
    headers = ClientHeaders(protocol.forward_headers(pairs, protocol.DROP_TO_CLIENT, lower_names=True), cookies)
    if session_id is not None:
        headers["mcp-session-id"] = session_id
    return headers


def with_cookies(response: Response, headers: Mapping[str, str]) -> Response:
    """`response` with the `Set-Cookie` lines of `headers` when they are `ClientHeaders`."""
    cookies = getattr(headers, "cookies", None)
    if cookies:
        response.raw_headers.extend((b"set-cookie", cookie.encode("latin-1")) for cookie in cookies)
    return response


class RelayedResponse(Response):
    """An upstream's whole answer relayed: what `with_cookies(Response(body, status_code=status,
    headers=h), h)` is for `h = client_headers(upstream, session_id)`, its raw headers written at
    once (starlette's `init_headers` lower-cases and encodes every name again and searches the
    list twice)."""

    def __init__(self, body: bytes, status: int, upstream: Mapping[str, str], session_id: str | None) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        headers = client_headers(upstream, session_id)
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if not (status < 200 or status in (204, 304)):  # as starlette: no length on those
            raw.append((b"content-length", b"%d" % len(body)))  # never copied from upstream (DROP_TO_CLIENT)
        self.raw_headers = raw
        with_cookies(self, headers)


def sse_response(body: AsyncIterator[bytes], headers: Mapping[str, str], slot: StreamSlot | None = None) -> SSEResponse:
    """`slot`: the client's admitted stream, kept announced while it is open, released at its end."""
    merged = {**{k.lower(): v for k, v in headers.items()}, **SSE_HEADERS}
    merged.pop("content-type", None)
    response = SSEResponse(body, merged, slot)
    with_cookies(response, headers)
    return response


async def iterate(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


class StreamSlot:
    """One admitted open stream of a client; released once, when its delivery ends."""

    __slots__ = ("_announced", "_limiter", "_released", "capped", "member", "who")

    def __init__(self, limiter: Limiter, who: str, member: str) -> None:
        self.who = who
        self.member = member
        self._limiter = limiter
        self._released = False
        self._announced = time.monotonic()
        self.capped = bool(limiter.config.max_streams)  # no cap (the default): nothing to admit or release

    async def release(self) -> None:
        if not self._released:
            self._released = True
            if self.capped:
                with contextlib.suppress(errors.StoreError):
                    await self._limiter.release("streams", self.who, self.member)

    def due(self) -> bool:
        """Time to re-announce the slot (every stream_ttl / 2 while it stays open)?"""
        return time.monotonic() - self._announced > self._limiter.config.stream_ttl / 2

    async def refresh(self) -> None:
        self._announced = time.monotonic()
        with contextlib.suppress(errors.GatewayError):
            await self._limiter.admit_stream(self.who, self.member)
