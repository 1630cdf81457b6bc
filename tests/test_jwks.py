"""The JWKS cache against a real key server on a local socket that can be held mid-answer.

Issue 35: every unknown `kid` refetched the JWKS under one lock, so 20 junk tokens made 20
fetches and held valid tokens behind a slow key server. Asserted by mechanism: how many fetches
the key server saw, and which requests completed while a fetch was still held open.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import errors
from gateway.http.auth import Authenticator, Unauthorized
from gateway.http.jwks import JwksCache
from gateway.supervisor import Supervisor

ISSUER = "https://issuer.example"
AUDIENCE = "https://gw.example/mcp"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JUNK_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def token(kid: str, key: Any = KEY) -> str:
    claims = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "exp": int(time.time() + 300)}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@dataclass
class KeyServer:
    """Serves one key (`known`); from the second fetch on, each answer waits for `release`."""

    url: str = ""
    fetches: int = 0
    now: float = 1000.0  # the cache's clock, moved by hand
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.fetches > 1:
            self.holding.set()
            await self.release.wait()
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
        return web.json_response({"keys": [{**jwk, "kid": "known", "alg": "RS256", "use": "sig"}]})


@pytest.fixture
async def keys() -> AsyncIterator[tuple[KeyServer, Authenticator, JwksCache]]:
    server = KeyServer()
    app = web.Application()
    app.router.add_get("/jwks", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    supervisor = Supervisor()
    async with aiohttp.ClientSession() as http:
        cache = JwksCache(f"http://127.0.0.1:{port}/jwks", http, supervisor, min_refresh=30.0, clock=lambda: server.now)
        auth = Authenticator(
            issuer=ISSUER, audience=AUDIENCE, resource=AUDIENCE, jwks=cache, public_key=None, algorithms=("RS256",)
        )
        try:
            yield server, auth, cache
        finally:
            server.release.set()
            await supervisor.aclose()
    await runner.cleanup()


async def test_unknown_kids_make_one_fetch_and_never_hold_known_keys(
    keys: tuple[KeyServer, Authenticator, JwksCache],
) -> None:
    server, auth, cache = keys
    assert await auth.principal({"authorization": f"Bearer {token('known')}"}) == f"{ISSUER}|alice"
    assert server.fetches == 1
    server.now += 31  # past --jwks-min-refresh: an unknown kid may refetch once
    junk = [
        asyncio.ensure_future(auth.principal({"authorization": f"Bearer {token(f'junk{i}', JUNK_KEY)}"}))
        for i in range(20)
    ]
    await asyncio.wait_for(server.holding.wait(), timeout=10)  # the refetch is held open by the key server
    # Tokens whose key is known are answered while the slow fetch is still held.
    for _ in range(5):
        assert await auth.principal({"authorization": f"Bearer {token('known')}"}) == f"{ISSUER}|alice"
    assert not server.release.is_set() and not any(task.done() for task in junk)
    server.release.set()
    results = await asyncio.gather(*junk, return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results), results
    assert server.fetches == 2 and cache.fetches == 2  # 20 unknown kids: one refetch, not 20
    # Within --jwks-min-refresh another unknown kid is refused at once, without a fetch.
    with pytest.raises(Unauthorized):
        await auth.principal({"authorization": f"Bearer {token('other', JUNK_KEY)}"})
    assert server.fetches == 2


async def test_a_key_server_that_is_down_is_a_generic_503() -> None:
    supervisor = Supervisor()
    async with aiohttp.ClientSession() as http:
        cache = JwksCache("http://127.0.0.1:9/jwks", http, supervisor, min_refresh=30.0)
        with pytest.raises(errors.UpstreamUnavailable) as raised:
            await cache.key("known")
        with pytest.raises(errors.UpstreamUnavailable):
            await cache.key("known")  # a second request right after: no second fetch
    await supervisor.aclose()
    assert cache.fetches == 1
    assert "127.0.0.1" not in raised.value.message
