"""The HTTP client that talks to upstream instances.

The connection pool (`gateway/upstream/http1.py`) is created once in the app lifespan and passed
in. Every failure is translated here into the gateway's error tree: refused connection -> 503
(UpstreamUnavailable), timeout -> 504, anything else malformed -> 502.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gateway import errors
from gateway.metrics import FastHistogram
from gateway.retry import upstream_connect
from gateway.timers import EXACT, Timers
from gateway.tracing import attributes as a
from gateway.tracing.api import NOOP, Attrs, Tracer
from gateway.upstream import http1
from gateway.upstream.failures import ConnectFailed, PoolBusy, ProtocolFailure
from gateway.upstream.labels import host_port
from gateway.wire import protocol

DROP_WITH_AUTHORIZATION = protocol.DROP_TO_UPSTREAM | {"authorization"}


@dataclass(frozen=True)
class HeaderPolicy:
    """What crosses from a client request to an upstream request, besides the protocol rules."""

    drop_authorization: bool = False  # gateway auth on: never pass the client's token upstream
    per_pool: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # With gateway auth off, the pools whose upstreams do get the client's `Authorization`
    # (`--forward-authorization`; "*" for all): a token meant for the gateway's host goes nowhere else.
    authorization_pools: frozenset[str] = frozenset()

    def passes_authorization(self, pool: str) -> bool:
        return not self.drop_authorization and ("*" in self.authorization_pools or pool in self.authorization_pools)

    def credentials(self, pool: str) -> frozenset[str]:
        """Lower-case names of the headers that carry credentials to `pool` (never stored in Redis)."""
        return frozenset({"authorization", "cookie", *(name.lower() for name in self.per_pool.get(pool, {}))})

    def build(self, client_headers: Iterable[tuple[str, str]], pool: str) -> dict[str, str]:
        drop = protocol.DROP_TO_UPSTREAM if self.passes_authorization(pool) else DROP_WITH_AUTHORIZATION
        headers = protocol.forward_headers(client_headers, drop)
        headers["Accept-Encoding"] = "identity"
        headers.update(self.per_pool.get(pool, {}))
        return headers


class UpstreamResponse:
    """An open upstream response; the caller must `close()` it (or read it whole)."""

    __slots__ = ("_response", "content_type", "headers", "status")

    def __init__(self, response: http1.Response) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        raw_type = response.headers.get("content-type", "application/octet-stream")
        self.content_type = raw_type.split(";", 1)[0].strip().lower()

    @property
    def is_sse(self) -> bool:
        return self.content_type == "text/event-stream"

    async def read(self, limit: int) -> bytes:
        """The whole body (until the upstream ends it), refusing more than `limit` bytes."""
        chunks: list[bytes] = []
        size = 0
        try:  # next_chunk, not iter_chunks: no async generator (each one is registered with the loop)
            while (chunk := await self._response.next_chunk()) is not None:
                size += len(chunk)
                if size > limit:
                    raise errors.UpstreamError("Bad upstream answer: body too large")
                chunks.append(chunk)
        except (OSError, ProtocolFailure) as exc:
            raise errors.UpstreamError(f"Bad upstream answer: {exc}") from exc
        finally:
            self.close()
        return b"".join(chunks)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, unbuffered; ends when the upstream closes."""
        try:
            async for chunk in self._response.iter_chunks():
                yield chunk
        except (OSError, ProtocolFailure) as exc:
            raise errors.UpstreamError(f"Upstream stream broke: {exc}") from exc

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The next bytes of the body (None at its end); TimeoutError past `timeout` s."""
        try:
            return await self._response.next_chunk(timeout)
        except TimeoutError:
            raise  # our bound passed (the http1 layer reports a broken connection as ProtocolFailure)
        except (OSError, ProtocolFailure) as exc:
            raise errors.UpstreamError(f"Upstream stream broke: {exc}") from exc

    def take_buffered(self) -> bytes:
        """The body bytes that arrived already, without waiting (b"" when none did)."""
        return self._response.take_buffered()

    def forget_headers(self) -> None:
        """Drop the headers once they were passed on: a stream open for hours keeps only what its
        body needs (status and content type stay)."""
        self._response.headers.clear()

    def close(self) -> None:
        self._response.close()


class UpstreamClient:
    def __init__(
        self,
        pool: http1.Http1Pool,
        *,
        request_timeout: float,
        latency: FastHistogram,
        tracer: Tracer = NOOP,
        pool_of: Mapping[str, str] | None = None,
    ) -> None:
        self._pool = pool
        self._pool_of = pool_of or {}  # instance URL -> pool name: the latency's label, never the URL
        self._tracer = tracer
        self._request_timeout = request_timeout
        self._latency = latency
        self._latency_by_url: dict[str, Any] = {}  # labelled children, looked up once per URL

    async def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        retry_connect: bool = True,
        timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send a request and return once response headers arrived (within `timeout`, default
        --request-timeout; a task's call may wait as long as the task lives)."""
        limit = self._request_timeout if timeout is None else timeout
        # One attempt, in a span when tracing (chosen here: no coroutine between the two).
        once = self._send_traced if self._tracer.enabled else self._send_plain
        if not retry_connect:
            return await once(method, url, headers, body, limit)
        try:  # the first attempt outside the retry machinery: it is the one that almost always works
            return await once(method, url, headers, body, limit)
        except errors.UpstreamUnavailable:
            pass
        async for attempt in upstream_connect(attempts=2):
            with attempt:
                return await once(method, url, headers, body, limit)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_traced(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, limit: float
    ) -> UpstreamResponse:
        """One attempt in a client span, whose context the upstream gets as its `traceparent`
        (W3C: it replaces the one the client sent, which is this span's ancestor)."""
        target = urlsplit(url)
        port = target.port or (443 if target.scheme == "https" else 80)
        attrs: Attrs = {a.HTTP_METHOD: method, a.URL: url, a.SERVER: target.hostname or "", a.PORT: port}
        with self._tracer.span(f"upstream {method}", kind="client", attrs=attrs) as span:
            response = await self._send_plain(method, url, self._tracer.inject(headers), body, limit)
            span.set(a.HTTP_STATUS, response.status)
            if response.status >= 400:
                span.error(str(response.status))
            return response

    async def _send_plain(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, limit: float
    ) -> UpstreamResponse:
        started = time.perf_counter()
        try:
            response = await self._pool.request(method, url, headers, body, timeout=limit)
        except TimeoutError as exc:
            raise errors.UpstreamTimeout("Upstream timed out") from exc
        except PoolBusy as exc:
            raise errors.UpstreamBusy("Upstream busy: no free connection; retry") from exc
        except ConnectFailed as exc:
            # Nothing reached the upstream: safe to retry or place elsewhere.
            raise errors.opaque(errors.UpstreamUnavailable, "Upstream unreachable", f"{host_port(url)}: {exc}") from exc
        except (OSError, ProtocolFailure) as exc:
            raise errors.opaque(errors.UpstreamError, "Bad upstream answer", f"{host_port(url)}: {exc}") from exc
        child = self._latency_by_url.get(url)
        if child is None:
            child = self._latency_by_url[url] = self._latency.labels(self._pool_of.get(url) or host_port(url))
        child.observe(time.perf_counter() - started)
        return UpstreamResponse(response)


def new_upstream_pool(
    *, connect_timeout: float, pool_size: int, timers: Timers = EXACT, acquire_timeout: float = 5.0
) -> http1.Http1Pool:
    """The request path's upstream connections of a replica (created in the lifespan)."""
    return http1.Http1Pool(
        connect_timeout=connect_timeout, limit_per_host=pool_size, timers=timers, acquire_timeout=acquire_timeout
    )


def new_http_session(*, connect_timeout: float, pool_size: int) -> aiohttp.ClientSession:
    """aiohttp, for the health probes and the JWKS fetch (created in the lifespan)."""
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=pool_size, keepalive_timeout=30, enable_cleanup_closed=True
    )
    timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=None)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        # A proxy must not keep cookies: one jar shared by every client would hand one client's
        # Set-Cookie to the next; Cookie/Set-Cookie headers pass through as they are. (Cheaper too.)
        cookie_jar=aiohttp.DummyCookieJar(),
    )
