"""Per-client limits at their defaults (issue 35): a flood is refused before any upstream work.

Real uvicorn, real Redis, the scripted upstream counting the initializes it was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.config import Settings
from tests.gateway_env import HEADERS, Env, init_body, running_gateway


@pytest.fixture
async def defaults(redis_url: str, key_prefix: str) -> AsyncIterator[Env]:
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix) as env:
        yield env


def initializes(env: Env) -> int:
    return sum(1 for m in env.upstream.requests if isinstance(m, dict) and m.get("method") == "initialize")


async def test_the_limits_are_on_by_default() -> None:
    settings = Settings(upstream=["http://127.0.0.1:1/mcp"])
    assert (settings.rate_limit, settings.max_sessions_per_client, settings.max_streams_per_client) == (600, 100, 20)


async def test_a_session_flood_is_stopped_before_the_upstream_sees_its_initializes(defaults: Env) -> None:
    async def one() -> int:
        r = await defaults.client.post(defaults.mcp, headers=HEADERS, json=init_body())
        return r.status_code

    statuses: list[int] = []
    for _ in range(6):  # 120 initializes from one address, 20 at a time
        statuses += await asyncio.gather(*(one() for _ in range(20)))
    assert statuses.count(200) == 100 and statuses.count(429) == 20, statuses
    assert initializes(defaults) == 100  # a refused session cost the upstream nothing
    registry = defaults.app.state.gateway.metrics.registry
    assert registry.get_sample_value("mcpgw_limits_hit_total", {"limit": "sessions"}) == 20


async def test_a_session_the_upstream_refused_does_not_count(redis_url: str, key_prefix: str) -> None:
    pools = ("default={}", "dead=http://127.0.0.1:9/mcp")
    async with running_gateway(
        redis_url=redis_url, key_prefix=key_prefix, max_sessions_per_client=1, pools=pools
    ) as env:
        for _ in range(3):
            bad = await env.client.post(f"{env.mcp}/dead", headers=HEADERS, json=init_body())
            assert bad.status_code == 503, bad.text
        assert await env.initialize()  # the one slot is still free
        refused = await env.client.post(env.mcp, headers=HEADERS, json=init_body())
        assert refused.status_code == 429
