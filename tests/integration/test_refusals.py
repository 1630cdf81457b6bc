"""Early refusals reach a client that is still uploading: raw sockets, a 20 MB body sent slowly.

Each refusal (413 oversized body, 415, 403, 401, 429) is decided before the body is read. The
client writes the body in small pieces and reads concurrently (or only after its upload, as
simple clients do); it must receive the whole spec-shaped answer, not a connection reset,
directly against uvicorn and through HAProxy.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.conftest import GatewayProc, StartGateways, StartLoadBalancer, StartSdkUpstream

TOTAL = 20 * 1024 * 1024
CHUNK = 64 * 1024
LIMIT = 4 * 1024 * 1024
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


async def upload(port: int, headers: dict[str, str], *, concurrent: bool) -> tuple[int, dict[str, Any]]:
    """POST a TOTAL-byte body in CHUNK pieces; returns (status, JSON body) of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST /mcp HTTP/1.1\r\nhost: gw\r\n{lines}content-length: {TOTAL}\r\n\r\n".encode())

    async def send_body() -> None:
        piece = b"x" * CHUNK
        try:
            for _ in range(TOTAL // CHUNK):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.0005)  # a slow uploader
        except ConnectionError:
            pass  # the server may close once the answer is out: not a failure by itself

    async def read_answer() -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        assert length is not None, head
        return head + await reader.readexactly(int(length.group(1)))

    try:
        if concurrent:
            sender = asyncio.ensure_future(send_body())
            answer = await asyncio.wait_for(read_answer(), timeout=60)
            await asyncio.wait_for(sender, timeout=60)
        else:
            await asyncio.wait_for(send_body(), timeout=60)
            answer = await asyncio.wait_for(read_answer(), timeout=60)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


CASES: dict[str, tuple[int, dict[str, str]]] = {
    "413-declared": (413, JSON_HEADERS),
    "415": (415, {"content-type": "text/plain", "accept": "application/json, text/event-stream"}),
    "403": (403, {**JSON_HEADERS, "origin": "http://evil.example"}),
}


def public_key_file(tmp_path: Path) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = tmp_path / "issuer.pem"
    path.write_bytes(pem)
    return f"@{path}"


@pytest.fixture
def plain_gateway(sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str) -> GatewayProc:
    [gw] = gateway_cluster(1, {"default": sdk_upstream()}, key_prefix)
    return gw


@pytest.mark.parametrize("concurrent", [True, False], ids=["reads-while-uploading", "reads-after-upload"])
@pytest.mark.parametrize("via", ["direct", "haproxy"])
async def test_refusals_before_the_body_reach_the_uploader(
    plain_gateway: GatewayProc, load_balancer: StartLoadBalancer, via: str, concurrent: bool
) -> None:
    port = plain_gateway.port
    if via == "haproxy":
        port = int(load_balancer([plain_gateway]).rsplit(":", 1)[1].split("/")[0])
        await asyncio.sleep(0.6)  # one health check passed
    for name, (expected, headers) in CASES.items():
        status, body = await upload(port, headers, concurrent=concurrent)
        assert status == expected, (name, body)
        assert body["jsonrpc"] == "2.0" and "code" in body["error"], (name, body)
    # The connection-level drain left the replica healthy: a normal request is still served.
    status, body = await small_post(port, JSON_HEADERS)
    assert status == 400 and body["error"]["code"] == -32600, body  # no session: spec-shaped 400


async def small_post(port: int, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST /mcp HTTP/1.1\r\nhost: gw\r\n{lines}content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
        + payload
    )
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize("via", ["direct", "haproxy"])
async def test_401_and_429_reach_the_uploader(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    tmp_path: Path,
    via: str,
) -> None:
    upstream = sdk_upstream()
    auth_args = ["--auth-issuer", "https://issuer.example", "--auth-public-key", public_key_file(tmp_path)]
    auth_args += ["--resource-url", "https://gw.example/mcp"]
    [auth] = gateway_cluster(1, {"default": upstream}, key_prefix, extra_args=auth_args)
    [limited] = gateway_cluster(1, {"default": upstream}, key_prefix + "-rl", extra_args=["--rate-limit", "1"])
    ports = {"auth": auth.port, "limited": limited.port}
    if via == "haproxy":
        for name, gw in (("auth", auth), ("limited", limited)):
            ports[name] = int(load_balancer([gw]).rsplit(":", 1)[1].split("/")[0])
        await asyncio.sleep(0.6)
    status, body = await upload(ports["auth"], JSON_HEADERS, concurrent=True)
    assert status == 401 and body["error"]["code"] == -32600, body
    assert (await small_post(ports["limited"], JSON_HEADERS))[0] == 400  # uses the one request a minute
    status, body = await upload(ports["limited"], JSON_HEADERS, concurrent=False)
    assert status == 429 and "error" in body, body


@pytest.mark.parametrize("trusted", [False, True])
async def test_a_forwarded_address_names_the_client_only_with_trust_forwarded_for(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, trusted: bool
) -> None:
    """Two requests from 127.0.0.1 claiming two client addresses, one request a minute each: with
    the flag they are two clients; without it one (uvicorn alone trusts a local proxy's header)."""
    args = ["--rate-limit", "1", *(["--trust-forwarded-for"] if trusted else [])]
    [gw] = gateway_cluster(1, {"default": sdk_upstream()}, f"{key_prefix}-xff-{trusted}", extra_args=args)
    first = await small_post(gw.port, {**JSON_HEADERS, "x-forwarded-for": "10.0.0.1"})
    second = await small_post(gw.port, {**JSON_HEADERS, "x-forwarded-for": "10.0.0.2"})
    assert first[0] == 400  # the first client's one request a minute (a bad body: 400)
    assert second[0] == (400 if trusted else 429), second


@pytest.mark.parametrize("trusted", [False, True])
async def test_the_resource_and_its_challenge_never_come_from_request_headers(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, tmp_path: Path, trusted: bool
) -> None:
    """RFC 9728 metadata and the 401 challenge name the configured --resource-url, whatever the
    request's Host and X-Forwarded-Proto say, trusted proxy or not (issue 35: a Host-derived
    audience accepted tokens minted for any host the client named)."""
    args = ["--auth-issuer", "https://issuer.example", "--auth-public-key", public_key_file(tmp_path)]
    args += ["--resource-url", "https://gw.example/mcp", *(["--trust-forwarded-for"] if trusted else [])]
    [gw] = gateway_cluster(1, {"default": sdk_upstream()}, f"{key_prefix}-xfp-{trusted}", extra_args=args)
    forged = b"host: billing.internal\r\nx-forwarded-proto: http\r\nconnection: close\r\n"
    answers = []
    for request in (b"GET /.well-known/oauth-protected-resource HTTP/1.1\r\n", b"GET /mcp HTTP/1.1\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(request + forged + b"accept: text/event-stream\r\n\r\n")
        answers.append(await asyncio.wait_for(reader.read(), timeout=10))
        writer.close()
    head, _, body = answers[0].partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200", head
    assert json.loads(body)["resource"] == "https://gw.example/mcp"
    head = answers[1].partition(b"\r\n\r\n")[0]
    assert head.split(b" ", 2)[1] == b"401", head
    challenge = re.search(rb"(?im)^www-authenticate:\s*(.*)$", head)
    assert challenge is not None, head
    assert b'resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp"' in challenge.group(1)
    assert b"billing.internal" not in answers[0] + answers[1]


async def test_oversized_chunked_body_is_refused_midway(plain_gateway: GatewayProc) -> None:
    """No content-length: the limit trips while reading; the 413 still reaches the uploader."""
    reader, writer = await asyncio.open_connection("127.0.0.1", plain_gateway.port)
    lines = "".join(f"{k}: {v}\r\n" for k, v in JSON_HEADERS.items())
    writer.write(f"POST /mcp HTTP/1.1\r\nhost: gw\r\n{lines}transfer-encoding: chunked\r\n\r\n".encode())
    piece = b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK)
    try:
        for _ in range(TOTAL // CHUNK):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.0005)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    assert length is not None, head
    body = json.loads(await reader.readexactly(int(length.group(1))))
    writer.close()
    assert head.split(b" ", 2)[1] == b"413", head
    assert body["error"]["code"] == -32600 and str(LIMIT) in body["error"]["message"], body
