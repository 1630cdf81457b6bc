"""The HTTP layer on the open internet (issue 35, items 1, 2, 9): real sockets against replica
processes. A 64 MB header line, trickling heads and bodies, a connection flood from one address
(127.0.0.1) while another (127.0.0.2) is served, and the header rules through the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from gateway.http import framing
from tests.integration.conftest import GatewayProc, StartGateways, StartSdkUpstream
from tests.integration.procs import free_port

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def read_until_closed(sock: socket.socket, seconds: float = 10.0) -> tuple[bytes, bool]:
    """All the server writes, and True if it then closed the connection (EOF or reset)."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        return got, False
    except OSError:
        return got, True
    return got, True


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match is not None, answer[:200]
    return int(match.group(1))


def error_body(answer: bytes) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert body["jsonrpc"] == "2.0" and "error" in body, body
    return body


async def initialize(url: str, local_address: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=local_address)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        return await client.post(url, json=INIT, headers=JSON_HEADERS)


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


# --- 1. header size, enforced while parsing ------------------------------------------------


def send_header_line(port: int, size: int) -> tuple[bytes, bool]:
    sock = connect(port)
    try:
        sock.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * (1 << 20)
        with contextlib.suppress(OSError):  # the server may close before the whole line is sent
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            sock.sendall(b"\r\nContent-Length: 0\r\n\r\n")
        return read_until_closed(sock)
    finally:
        sock.close()


async def test_a_64_mb_header_line_is_refused_431_closed_and_never_buffered(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    (gateway,) = gateway_cluster(1, {"default": sdk_upstream()}, key_prefix)
    before = vm_rss_kb(gateway.proc.pid)
    answer, closed = await asyncio.to_thread(send_header_line, gateway.port, 64 << 20)
    after = vm_rss_kb(gateway.proc.pid)
    assert status_of(answer) == 431 and closed
    assert error_body(answer)["error"]["message"].startswith("Request Header Fields Too Large")
    assert after - before < 16 * 1024, (before, after)  # a buffered line would add 64 MB at least
    assert (await initialize(gateway.url)).status_code == 200  # the replica serves on


# --- 2. read deadlines ---------------------------------------------------------------------


def trickle(port: int, request: bytes, seconds: float) -> tuple[bytes, bool, int]:
    """Send `request` a byte every 0.2 s until the server answers; (answer, closed, bytes sent)."""
    sock = connect(port)
    sent = 0
    try:
        sock.settimeout(0.2)
        for byte in request:
            with contextlib.suppress(OSError):
                sock.send(bytes([byte]))
                sent += 1
            try:
                first = sock.recv(65536)
            except TimeoutError:
                continue
            rest, closed = read_until_closed(sock, seconds)
            return first + rest, closed or first == b"", sent
        return b"", False, sent
    finally:
        sock.close()


async def test_trickling_heads_and_bodies_are_answered_408_at_the_deadline_while_a_client_works(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    flags = ["--header-timeout", "1", "--body-idle-timeout", "1"]
    (gateway,) = gateway_cluster(1, {"default": sdk_upstream()}, key_prefix, flags)
    head = b"POST /mcp HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    body = (
        b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{"
    )
    half_body = connect(gateway.port)
    half_body.sendall(body)  # then nothing: the body stalls
    tricklers = [asyncio.to_thread(trickle, gateway.port, head, 10) for _ in range(10)]
    stalling = asyncio.to_thread(read_until_closed, half_body, 10)
    normal = [initialize(gateway.url) for _ in range(5)]
    trickled, stalled = await asyncio.gather(asyncio.gather(*tricklers), stalling)
    for answer, closed, sent in trickled:
        assert status_of(answer) == 408 and closed and sent < len(head)
    answer, closed = stalled
    assert status_of(answer) == 408 and closed
    half_body.close()
    assert [r.status_code for r in await asyncio.gather(*normal)] == [200] * 5


# --- 2. connection caps --------------------------------------------------------------------


async def test_a_flood_from_one_address_is_capped_while_another_address_and_health_are_served(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    cap = 20
    flags = ["--max-connections-per-client", str(cap), "--header-timeout", "60"]
    (gateway,) = gateway_cluster(1, {"default": sdk_upstream()}, key_prefix, flags)
    flood = [connect(gateway.port) for _ in range(cap)]  # idle connections, all held
    try:
        await asyncio.sleep(0.2)  # accepted and counted
        # over the cap, the flooding address may still ask for health (one request, then closed)
        health = connect(gateway.port)
        health.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer, closed = read_until_closed(health)
        assert status_of(answer) == 200 and closed
        refused = await initialize(gateway.url)  # anything else: 429 with a JSON-RPC error
        assert refused.status_code == 429 and refused.json()["error"]["message"].startswith("Too Many Requests")
        assert refused.headers["connection"] == "close" and refused.headers["retry-after"] == "1"
        served = await initialize(gateway.url, local_address="127.0.0.2")  # another address is not affected
        assert served.status_code == 200 and "mcp-session-id" in served.headers
        # past the client's health reserve: answered 429 and closed at accept; the few in the reserve
        # that send nothing are closed after PROBATION_SECONDS, unanswered
        many = [connect(gateway.port) for _ in range(50)]
        answers = [read_until_closed(sock, 5) for sock in many]
        assert all(closed for _, closed in answers)
        statuses = [status_of(answer) for answer, _ in answers if answer]
        assert statuses == [429] * len(statuses) and len(statuses) >= len(many) - framing.CLIENT_RESERVE
        for sock in many:
            sock.close()
    finally:
        for sock in flood:
            sock.close()
    await asyncio.sleep(0.2)
    assert (await initialize(gateway.url)).status_code == 200  # the slots came back


async def test_a_full_replica_answers_503_but_its_health_checks(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    flags = ["--max-connections", "10", "--max-connections-per-client", "0", "--header-timeout", "60"]
    (gateway,) = gateway_cluster(1, {"default": sdk_upstream()}, key_prefix, flags)
    flood = [connect(gateway.port, source) for source in ("127.0.0.1", "127.0.0.3") for _ in range(5)]
    try:
        await asyncio.sleep(0.2)
        full = await initialize(gateway.url, local_address="127.0.0.2")
        assert full.status_code == 503 and full.json()["error"]["code"] == -32000
        for path in ("/healthz", "/readyz"):
            sock = connect(gateway.port, "127.0.0.2")
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer, _ = read_until_closed(sock)
            assert status_of(answer) == 200, answer
            sock.close()
    finally:
        for sock in flood:
            sock.close()


# --- 9. headers crossing the gateway --------------------------------------------------------


@contextlib.asynccontextmanager
async def chatty_upstream(seen: list[dict[str, str]]) -> AsyncIterator[str]:
    """An MCP upstream that says too much about itself and records the headers it receives."""

    async def mcp(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        message = await request.json()
        result = {"protocolVersion": "2025-11-25", "capabilities": {}, "serverInfo": {"name": "u", "version": "1"}}
        return web.json_response(
            {"jsonrpc": "2.0", "id": message.get("id"), "result": result},
            headers={
                "X-Powered-By": "Express",
                "Server": "upstream/1.0",
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Credentials": "true",
                "Mcp-Session-Id": "upstream-session",
            },
        )

    app = web.Application()
    app.router.add_post("/mcp", mcp)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        await runner.cleanup()


async def test_headers_crossing_the_gateway(gateway_cluster: StartGateways, key_prefix: str) -> None:
    seen: list[dict[str, str]] = []
    async with chatty_upstream(seen) as upstream:
        gateway: GatewayProc
        (gateway,) = gateway_cluster(
            1, {"default": upstream, "open": upstream}, key_prefix, ["--forward-authorization", "open"]
        )
        async with httpx.AsyncClient(timeout=10) as client:
            token = {"Authorization": "Bearer for-the-gateway"}
            answer = await client.post(gateway.url, json=INIT, headers={**JSON_HEADERS, **token})
            assert answer.status_code == 200
            for name in ("x-powered-by", "server", "access-control-allow-origin", "access-control-allow-credentials"):
                assert name not in answer.headers, (name, answer.headers)
            assert answer.headers["mcp-session-id"] != "upstream-session"
            assert "authorization" not in seen[-1]  # auth off, and this pool did not ask for it
            assert (
                await client.post(f"{gateway.base_url}/mcp/open", json=INIT, headers={**JSON_HEADERS, **token})
            ).status_code == 200
            assert seen[-1]["authorization"] == "Bearer for-the-gateway"  # `--forward-authorization open`
            evil = await client.post(
                gateway.url, json=INIT, headers={**JSON_HEADERS, "Origin": "http://localhost:80.evil.com"}
            )
            assert evil.status_code == 403
            local = await client.post(
                gateway.url, json=INIT, headers={**JSON_HEADERS, "Origin": "http://localhost:8080"}
            )
            assert local.status_code == 200
        sock = connect(gateway.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: billing.internal\r\n\r\n")
        refused, closed = read_until_closed(sock)
        sock.close()
        assert status_of(refused) == 400 and closed
        assert "more than one Host" in error_body(refused)["error"]["message"]
