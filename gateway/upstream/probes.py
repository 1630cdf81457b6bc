"""Health probes: asking an upstream instance "are you there?" without costing it anything.

Why a table of kinds: what a probe costs depends on the server. Measured (README, "Health
probes"): a GET, OPTIONS or sessionless POST to the Python SDK 2.3.0 server's MCP endpoint
creates a session and tears it down, three log lines each time; server-everything logs
every GET and POST and builds a server object per sessionless POST. Only a TCP connect costs
neither anything, so it is the default; the other kinds check more (the HTTP stack answers)
and are there for servers where they are free, or for a health endpoint (`METHOD /path`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from gateway.config.specs import ProbeSpec

_MCP_ACCEPT = "application/json, text/event-stream"
_CLIENT_INFO = {"name": "mcp-gateway-health", "version": "1"}

# 2026-07-28 basic/index "Per-request protocol fields": a stateless request carries version and capabilities.
_DISCOVER = {
    "jsonrpc": "2.0",
    "id": "mcp-gateway-health",
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": _CLIENT_INFO,
        }
    },
}
_PING = {"jsonrpc": "2.0", "id": "mcp-gateway-health", "method": "ping"}


@dataclass(frozen=True)
class HttpProbe:
    """One HTTP probe request, and the statuses that mean the instance is up."""

    method: str
    headers: dict[str, str]
    body: bytes | None = None
    up_below: int = 500  # an MCP endpoint that answers 400/405 to a bare probe is alive


_JSON = {"Accept": _MCP_ACCEPT, "Content-Type": "application/json"}

# Probe kinds sent to the instance's MCP URL (`tcp` and `http` are handled apart).
MCP_PROBES: dict[str, HttpProbe] = {
    "options": HttpProbe("OPTIONS", {}),
    "ping": HttpProbe("POST", _JSON, json.dumps(_PING).encode()),
    # 2026-07-28 basic/transports: Mcp-Method mirrors the body's method.
    "discover": HttpProbe(
        "POST",
        {**_JSON, "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"},
        json.dumps(_DISCOVER).encode(),
    ),
    "get": HttpProbe("GET", {"Accept": "text/event-stream"}),
}

_DEFAULT_PORTS = {"http": 80, "https": 443}


def probe_target(url: str, spec: ProbeSpec) -> tuple[str, HttpProbe | None]:
    """The URL to send to and the request, or (url, None) for a bare TCP connect."""
    if spec.kind == "tcp":
        return url, None
    if spec.kind == "http":
        parts = urlsplit(url)
        # A health endpoint says "healthy" with a 2xx; anything else is down.
        return f"{parts.scheme}://{parts.netloc}{spec.path}", HttpProbe(spec.method, {}, None, up_below=300)
    return url, MCP_PROBES[spec.kind]


class Prober:
    """Sends one probe; True when the instance is up. Every failure, including a timeout, is False."""

    def __init__(self, http: aiohttp.ClientSession, *, timeout: float) -> None:
        self._http = http
        self._timeout = timeout

    async def __call__(self, url: str, spec: ProbeSpec) -> bool:
        target, request = probe_target(url, spec)
        try:
            async with asyncio.timeout(self._timeout):
                if request is None:
                    return await _connect(target)
                async with self._http.request(
                    request.method, target, headers=request.headers, data=request.body, allow_redirects=False
                ) as response:
                    return response.status < request.up_below
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return False


async def _connect(url: str) -> bool:
    """Open and close a TCP connection: the server's HTTP layer never sees a request, so logs nothing."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    _, writer = await asyncio.open_connection(host, parts.port or _DEFAULT_PORTS.get(parts.scheme, 80))
    writer.close()
    await writer.wait_closed()
    return True
