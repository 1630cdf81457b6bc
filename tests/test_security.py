"""Security and robustness at the component level: auth, session binding, limits, hostile peers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.gateway_env import HEADERS, Env, call, init_body, parse_sse, running_gateway

ISSUER = "https://issuer.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(
    sub: str,
    *,
    aud: str = "https://gw.example/mcp",
    exp: float | None = None,
    key: Any = KEY,
    iss: str = ISSUER,
) -> str:
    claims = {"iss": iss, "sub": sub, "aud": aud, "exp": int(exp if exp is not None else time.time() + 300)}
    return jwt.encode(claims, key, algorithm="RS256")


@pytest.fixture
async def secure(redis_url: str, key_prefix: str) -> AsyncIterator[Env]:
    async with running_gateway(
        redis_url=redis_url,
        key_prefix=key_prefix,
        auth_issuer=ISSUER,
        auth_public_key=PUBLIC_PEM,
        resource_url="https://gw.example/mcp",
        authorization_servers=[ISSUER],
        upstream_header=["default:X-Upstream-Key: s3cret"],
    ) as env:
        yield env


def bearer(sub: str, **kwargs: Any) -> dict[str, str]:
    return {**HEADERS, "Authorization": f"Bearer {token(sub, **kwargs)}"}


async def test_missing_or_bad_token_gets_401_with_metadata_pointer(secure: Env) -> None:
    cases = [
        HEADERS,
        {**HEADERS, "Authorization": "Bearer not-a-jwt"},
        bearer("alice", aud="https://other.example/mcp"),
        bearer("alice", exp=time.time() - 3600),
        bearer("alice", key=OTHER_KEY),
        bearer("alice", iss="https://evil.example"),
    ]
    for headers in cases:
        r = await secure.client.post(secure.mcp, headers=headers, json=init_body())
        assert r.status_code == 401, headers
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and "/.well-known/oauth-protected-resource" in challenge
        assert r.json()["error"]["code"] == -32600
    meta = await secure.client.get(f"{secure.url}/.well-known/oauth-protected-resource")
    assert meta.json()["resource"] == "https://gw.example/mcp"
    assert meta.json()["authorization_servers"] == [ISSUER]


async def test_token_is_never_passed_upstream_and_pool_credentials_are(secure: Env) -> None:
    r = await secure.client.post(secure.mcp, headers=bearer("alice"), json=init_body())
    assert r.status_code == 200
    seen = secure.upstream.headers_seen[-1]
    assert "authorization" not in seen
    assert seen["x-upstream-key"] == "s3cret"


async def test_session_is_bound_to_its_principal(secure: Env) -> None:
    r = await secure.client.post(secure.mcp, headers=bearer("alice"), json=init_body())
    sid = r.headers["mcp-session-id"]
    alice = {**bearer("alice"), "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    mallory = {**bearer("mallory"), "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    r = await secure.client.post(secure.mcp, headers=alice, json=call("stream", count=2))
    cursor = parse_sse(r.text)[1]["id"]
    assert (await secure.client.post(secure.mcp, headers=mallory, json=call("echo"))).status_code == 404
    stolen = await secure.client.get(secure.mcp, headers={**mallory, "Last-Event-ID": cursor})
    assert stolen.status_code == 404 and "progress" not in stolen.text
    assert (await secure.client.delete(secure.mcp, headers=mallory)).status_code == 404
    assert (await secure.client.post(secure.mcp, headers=alice, json=call("echo", rid=3))).status_code == 200


@pytest.fixture
async def limited(redis_url: str, key_prefix: str) -> AsyncIterator[Env]:
    async with running_gateway(
        redis_url=redis_url,
        key_prefix=key_prefix,
        rate_limit=30,
        max_sessions_per_client=3,
        max_streams_per_client=2,
        max_batch=4,
        max_header_bytes=4096,
        stream_idle_timeout=1.0,
        sse_max_line=64 * 1024,
    ) as env:
        yield env


async def test_session_cap_is_429_and_delete_frees_a_slot(limited: Env) -> None:
    sids = [await limited.initialize() for _ in range(3)]
    r = await limited.client.post(limited.mcp, headers=HEADERS, json=init_body())
    assert r.status_code == 429 and r.json()["error"]["message"].startswith("Too Many Requests")
    registry = limited.app.state.gateway.metrics.registry
    assert registry.get_sample_value("mcpgw_limits_hit_total", {"limit": "sessions"}) == 1
    assert (await limited.client.delete(limited.mcp, headers=limited.headers(sids[0]))).status_code == 200
    assert await limited.initialize()


async def test_stream_cap_is_429(limited: Env) -> None:
    sid = await limited.initialize()
    headers = {**limited.headers(sid), "Accept": "text/event-stream"}
    async with (
        limited.client.stream("GET", limited.mcp, headers=headers) as one,
        limited.client.stream("GET", limited.mcp, headers=headers) as two,
    ):
        assert one.status_code == two.status_code == 200
        third = await limited.client.post(limited.mcp, headers=limited.headers(sid), json=call("stream"))
        assert third.status_code == 429
    await asyncio.sleep(0.3)  # both streams closed: slots released
    r = await limited.client.post(limited.mcp, headers=limited.headers(sid), json=call("stream", count=1))
    assert r.status_code == 200


async def test_rate_limit_429_then_other_limits(limited: Env) -> None:
    sid = await limited.initialize()
    batch = [call("echo", rid=i) for i in range(5)]
    r = await limited.client.post(limited.mcp, headers=limited.headers(sid, "2025-03-26"), json=batch)
    assert r.status_code == 413
    r = await limited.client.post(limited.mcp, headers={**limited.headers(sid), "X-Big": "x" * 5000}, json=call("echo"))
    assert r.status_code == 431
    statuses = [
        (await limited.client.post(limited.mcp, headers=limited.headers(sid), json=call("echo"))).status_code
        for _ in range(70)
    ]
    assert 429 in statuses and statuses[0] == 200
    # 30 a minute (3 requests above went first); a slow machine may cross one window boundary
    assert statuses.index(429) <= 60
    registry = limited.app.state.gateway.metrics.registry

    def hits(limit: str) -> float | None:
        value: float | None = registry.get_sample_value("mcpgw_limits_hit_total", {"limit": limit})
        return value

    assert hits("size") == 1 and hits("headers") == 1 and hits("rate") == statuses.count(429)


async def test_hostile_upstream_answers_never_crash_or_hang(limited: Env) -> None:
    sid = await limited.initialize()
    h = limited.headers(sid)
    r = await limited.client.post(limited.mcp, headers=h, json=call("html"))
    assert r.status_code == 502 and r.json()["id"] == 2
    r = await limited.client.post(limited.mcp, headers=h, json=call("badsse", rid=3))  # endless line
    answer = json.loads(parse_sse(r.text)[-1]["data"])
    assert answer["id"] == 3 and "malformed SSE" in answer["error"]["message"]
    r = await limited.client.post(limited.mcp, headers=h, json=call("hang", rid=4))  # never answers
    answer = json.loads(parse_sse(r.text)[-1]["data"])
    assert answer["id"] == 4 and "idle bound" in answer["error"]["message"]
    r = await limited.client.post(limited.mcp, headers=h, json=call("orphan", rid=5))
    messages = [json.loads(e["data"]) for e in parse_sse(r.text) if e.get("data")]
    assert messages[-1]["id"] == 5 and "result" in messages[-1]
    assert (await limited.client.get(f"{limited.url}/healthz")).status_code == 200
