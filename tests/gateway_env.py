"""A gateway app on real uvicorn in front of a scripted in-process upstream, for component tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from gateway.config import Settings
from gateway.http.app import create_app
from tests.asgi_server import serve
from tests.scripted_upstream import Behaviour, ScriptedUpstream

ACCEPT = "application/json, text/event-stream"
HEADERS = {"Accept": ACCEPT, "Content-Type": "application/json"}


def init_body(version: str = "2025-11-25", rid: int = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }


def call(name: str, rid: int = 2, **arguments: Any) -> dict[str, Any]:
    # The scripted upstream's progress names the request id as its token: the call asks for it
    # (basic/utilities/progress: progress only for a token a request provided).
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments, "_meta": {"progressToken": rid}},
    }


class Env:
    def __init__(self, url: str, upstream: ScriptedUpstream, client: httpx.AsyncClient, app: Any = None) -> None:
        self.url = url
        self.mcp = f"{url}/mcp"
        self.upstream = upstream
        self.client = client
        self.app = app  # the gateway's ASGI app (its `state.gateway` once started)

    async def initialize(self, version: str = "2025-11-25") -> str:
        r = await self.client.post(self.mcp, headers=HEADERS, json=init_body(version))
        assert r.status_code == 200, r.text
        return r.headers["mcp-session-id"]

    def headers(self, sid: str, version: str = "2025-11-25") -> dict[str, str]:
        return {**HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": version}


def parse_sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        if fields:
            events.append(fields)
    return events


@asynccontextmanager
async def running_gateway(
    *,
    behaviour: Behaviour | None = None,
    pools: Sequence[str] = ("default={}",),
    timeout: float = 10,
    **settings: Any,
) -> AsyncIterator[Env]:
    """Serve a scripted upstream and a gateway app in front of it; `{}` in `pools` is the upstream URL."""
    upstream = ScriptedUpstream(behaviour or Behaviour())
    # Drain keeps pumping until answers end or the deadline: a short one keeps teardown quick.
    settings.setdefault("drain_timeout", 1.0)
    settings.setdefault("metrics_port", 0)  # no metrics listener unless a test asks (tests share this host)
    # The scripted upstream answers every era as it is asked: nothing is bridged, and no era probe is sent.
    settings.setdefault("upstream_era", [f"{p.split('=')[0].split('@')[0]}=both" for p in pools])
    async with serve(upstream) as upstream_url:
        app = create_app(Settings(upstream=[p.format(f"{upstream_url}/mcp") for p in pools], **settings))
        async with serve(app) as url, httpx.AsyncClient(timeout=timeout) as client:
            yield Env(url, upstream, client, app)
