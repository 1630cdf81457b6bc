"""Health probe kinds over real loopback sockets: what each one sends, and what counts as up."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.config.specs import PROBE_KINDS, ProbeSpec
from gateway.upstream.probes import MCP_PROBES, Prober
from tests.asgi_server import read_body, serve


class Recorder:
    """An upstream that records every HTTP request and answers with `status`."""

    def __init__(self) -> None:
        self.status = 400
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = await read_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append((scope["method"], scope["path"], headers, body))
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder()
    async with serve(recorder) as url:
        yield recorder, f"{url}/mcp"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_every_kind_has_a_request() -> None:
    assert set(PROBE_KINDS) == {"tcp", *MCP_PROBES}


async def test_tcp_connects_without_sending_a_request(
    upstream: tuple[Recorder, str], http: aiohttp.ClientSession
) -> None:
    recorder, url = upstream
    probe = Prober(http, timeout=1.0)
    assert await probe(url, ProbeSpec("tcp", 1.0))
    await asyncio.sleep(0.05)
    assert recorder.seen == []  # the HTTP layer never saw a request


async def test_mcp_kinds_send_what_the_table_says(upstream: tuple[Recorder, str], http: aiohttp.ClientSession) -> None:
    recorder, url = upstream
    probe = Prober(http, timeout=1.0)
    for kind in ("options", "ping", "discover", "get"):
        assert await probe(url, ProbeSpec(kind, 1.0)), kind  # 400 from an MCP endpoint: alive
    methods = [(m, p) for m, p, _, _ in recorder.seen]
    assert methods == [("OPTIONS", "/mcp"), ("POST", "/mcp"), ("POST", "/mcp"), ("GET", "/mcp")]
    _, _, ping_headers, ping_body = recorder.seen[1]
    assert json.loads(ping_body)["method"] == "ping" and "mcp-session-id" not in ping_headers
    _, _, headers, body = recorder.seen[2]
    discover = json.loads(body)
    # 2026-07-28: the routing headers mirror the body, the envelope rides in _meta
    assert headers["mcp-protocol-version"] == "2026-07-28" and headers["mcp-method"] == discover["method"]
    assert discover["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    recorder.status = 503
    assert not await probe(url, ProbeSpec("ping", 1.0))


async def test_health_endpoint_probe_needs_a_2xx(upstream: tuple[Recorder, str], http: aiohttp.ClientSession) -> None:
    recorder, url = upstream
    probe = Prober(http, timeout=1.0)
    spec = ProbeSpec("http", 1.0, "HEAD", "/healthz")
    recorder.status = 404  # a health endpoint that is not there is a misconfiguration, not "up"
    assert not await probe(url, spec)
    recorder.status = 204
    assert await probe(url, spec)
    assert [(m, p) for m, p, _, _ in recorder.seen] == [("HEAD", "/healthz")] * 2


async def test_dead_and_silent_instances_are_down(http: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"  # nothing listens once closed
    probe = Prober(http, timeout=0.3)
    for kind in PROBE_KINDS:
        assert not await probe(dead, ProbeSpec(kind, 1.0)), kind

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, never answers: only the prober's timeout (it hangs up) ends this
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/mcp"
        assert not await probe(url, ProbeSpec("get", 1.0))
        assert await probe(url, ProbeSpec("tcp", 1.0))  # the limit of a TCP probe: a listener is "up"
    finally:
        server.close()
