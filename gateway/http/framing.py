"""Connection-level rules of the gateway's HTTP/1.1 server: head bounds, read deadlines, caps.

Pure (no IO): the protocol (`http/connections.py`) asks these what to do with what it sees. Every
refusal is a whole response written by the protocol itself (`canned`), with a JSON-RPC error body
as every gateway error, and `connection: close`: the bytes that follow it are not a request.
docs/hardening.md gives each default and its reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any

from gateway import errors

log = logging.getLogger("gateway.http.connections")

# Paths answered even on a connection over a cap (a load balancer's and a kubelet's probes).
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
# Connections accepted past `max_connections`, for health checks only: a flood that fills the cap
# still leaves the probes a way in. Past cap + reserve a connection is refused at accept.
HEALTH_RESERVE = 32
# The same per client address: its health checks (if they come from the flooding address) get in.
CLIENT_RESERVE = 4
# A connection over a cap must send its (health) request head within this long.
PROBATION_SECONDS = 2.0
# After a refusal the gateway half-closes (FIN after the answer) and reads and drops what the client
# still sends for up to this long, so the client reads the answer instead of a reset.
LINGER_SECONDS = 2.0
# Descriptors kept out of the connection budget: Redis, upstream pools, health probes, logs.
DESCRIPTOR_RESERVE = 64


@dataclass(frozen=True)
class ConnectionRules:
    """The server's limits, from Settings (0 turns a cap off)."""

    max_header_bytes: int
    header_timeout: float
    body_idle_timeout: float
    max_connections: int
    max_connections_per_client: int


def connection_budget(requested: int, descriptors: int) -> int:
    """The connection cap a replica can keep: each client connection may hold an upstream one
    (an open stream does), so half the descriptors left after the reserve and the health slots."""
    if requested <= 0:
        return 0
    fits = max(1, (descriptors - DESCRIPTOR_RESERVE - HEALTH_RESERVE) // 2)
    return min(requested, fits)


class RequestTimeout(errors.ClientError):
    """RFC 9110 §15.5.9: the request did not arrive whole in time."""

    status = 408


class TooManyConnections(errors.ClientError):
    """This client address holds `--max-connections-per-client` connections already."""

    status = 429
    headers = {"Retry-After": "1"}


class ServerFull(errors.GatewayError):
    """This replica holds `--max-connections` connections already (another replica may not)."""

    status = 503
    code = errors.SERVER_ERROR
    headers = {"Retry-After": "1"}


class BadHost(errors.ClientError):
    """RFC 9112 §3.2: no Host in an HTTP/1.1 request, or more than one."""


def canned(exc: errors.GatewayError, default_headers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """The whole response for `exc`, to write as it is: JSON-RPC error body, `connection: close`."""
    body = json.dumps(exc.to_jsonrpc(None)).encode()
    phrase = HTTPStatus(exc.status).phrase
    lines = [f"HTTP/1.1 {exc.status} {phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [f"{name}: {value}".encode() for name, value in exc.headers.items()]
    lines += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def headers_too_large(limit: int) -> errors.GatewayError:
    return errors.HeadersTooLarge(f"Request Header Fields Too Large: over {limit} bytes")


def host_refusal(headers: Sequence[tuple[bytes, bytes]], http_version: str) -> errors.GatewayError | None:
    """RFC 9112 §3.2: 400 for more than one Host, or none in HTTP/1.1 (two Hosts let a proxy and
    the gateway disagree on the authority, the base of resource URLs)."""
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        return BadHost("Bad Request: more than one Host header")
    if not hosts and http_version == "1.1":
        return BadHost("Bad Request: no Host header")
    return None


def head_estimate(url: bytes, headers: Sequence[tuple[bytes, bytes]]) -> int:
    """Bytes of a head parsed so far (request target and whole header lines), for a head that
    began inside a read (a pipelined request): a lower bound, the unfinished line not counted."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


class Verdict(Enum):
    ADMIT = "admit"
    HEALTH_ONLY = "health only"  # over a cap: one health request, else the refusal
    REFUSE = "refuse"  # past the health reserve: answered and closed at once


class RefusalApp:
    """The ASGI app that answers a refused request (the protocol closes the connection after it)."""

    __slots__ = ("exc",)

    def __init__(self, exc: errors.GatewayError) -> None:
        self.exc = exc

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps(self.exc.to_jsonrpc(None)).encode()
        headers = [(k.lower().encode(), v.encode()) for k, v in self.exc.headers.items()]
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        headers.append((b"connection", b"close"))  # the bytes after a refused head are not a request
        await send({"type": "http.response.start", "status": self.exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class CloseAfter:
    """An app whose answer ends the connection (`connection: close`, which uvicorn honours)."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


class Admission:
    """Open connections of one process, in total and per client address (the peer; with
    `--trust-forwarded-for` the peer is a proxy and only the total is capped)."""

    def __init__(self, rules: ConnectionRules, *, per_client: bool = True) -> None:
        self.rules = rules
        self.per_client = per_client and rules.max_connections_per_client > 0
        self.total = 0
        self.by_client: dict[str, int] = {}
        self.refused = 0
        self._reported = 0.0

    def open(self, client: str) -> tuple[Verdict, errors.GatewayError | None]:
        """Count a new connection and say how to treat it (`close` must be called for each)."""
        self.total += 1
        held = 0
        if self.per_client:
            held = self.by_client.get(client, 0)
            self.by_client[client] = held + 1
        cap = self.rules.max_connections
        if cap and self.total > cap:
            return self._over(self.total > cap + HEALTH_RESERVE, ServerFull("Service Unavailable: replica is full"))
        per = self.rules.max_connections_per_client
        if self.per_client and held >= per:
            over = TooManyConnections(f"Too Many Requests: over {per} connections from this address")
            return self._over(held >= per + CLIENT_RESERVE, over)
        return Verdict.ADMIT, None

    def _over(self, past_reserve: bool, exc: errors.GatewayError) -> tuple[Verdict, errors.GatewayError]:
        self.refused += 1
        now = time.monotonic()
        if now - self._reported >= 10.0:  # a flood makes one line per 10 s, not one per connection
            self._reported = now
            log.warning("connection cap reached (%s); %d connections refused so far", exc.message, self.refused)
        return (Verdict.REFUSE if past_reserve else Verdict.HEALTH_ONLY), exc

    def close(self, client: str) -> None:
        self.total -= 1
        if self.per_client:
            left = self.by_client.get(client, 0) - 1
            if left > 0:
                self.by_client[client] = left
            else:
                self.by_client.pop(client, None)
