"""Abandoned standalone streams give their upstream connections back, and waiting for a free
upstream connection has a deadline (issue 35: fifty opened-and-dropped GET streams held a pool
of fifty for the idle bound, and the next initialize waited for a minute).

Real uvicorn, real Redis; the mechanism is the pool's open-connection gauge."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.gateway_env import HEADERS, Env, init_body, running_gateway

POOL = 4


@pytest.fixture
async def env(redis_url: str, key_prefix: str) -> AsyncIterator[Env]:
    async with running_gateway(
        redis_url=redis_url,
        key_prefix=key_prefix,
        upstream_pool_size=POOL,
        upstream_acquire_timeout=0.5,
        stream_abandon_timeout=0.5,
    ) as env:
        yield env


def open_connections(env: Env) -> float:
    value = env.app.state.gateway.metrics.registry.get_sample_value("mcpgw_upstream_connections")
    assert isinstance(value, float)
    return value


async def test_dropped_get_streams_release_the_pool_and_a_full_pool_answers_503(env: Env) -> None:
    sid = await env.initialize()
    headers = {**env.headers(sid), "Accept": "text/event-stream"}
    async with contextlib.AsyncExitStack() as streams:
        for _ in range(POOL):
            response = await streams.enter_async_context(env.client.stream("GET", env.mcp, headers=headers))
            assert response.status_code == 200
        assert open_connections(env) == POOL  # each open stream holds one upstream connection
        # A full pool: the next initialize gets a JSON-RPC 503 at the acquire deadline, not a hang.
        refused = await env.client.post(env.mcp, headers=HEADERS, json=init_body())
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["message"].startswith("Upstream busy") and refused.json()["id"] == 1
        assert open_connections(env) == POOL  # the streams still have their clients: kept
    # Every client left and nothing is pending on a standalone stream: the pumps end them.
    for _ in range(300):
        if open_connections(env) == 0:
            break
        await asyncio.sleep(0.05)
    assert open_connections(env) == 0
    assert await env.initialize()  # the pool serves again


async def test_a_stream_with_a_client_keeps_its_connection(env: Env) -> None:
    sid = await env.initialize()
    headers = {**env.headers(sid), "Accept": "text/event-stream"}
    async with env.client.stream("GET", env.mcp, headers=headers) as response:
        assert response.status_code == 200
        ticks = 0
        reader = response.aiter_raw()
        with contextlib.suppress(TimeoutError, httpx.ReadTimeout):
            async with asyncio.timeout(2.0):  # four abandon timeouts
                async for _ in reader:
                    ticks += 1
        assert open_connections(env) >= 1
        pumps = env.app.state.gateway.metrics.registry.get_sample_value("mcpgw_active_pumps")
        assert pumps == 1  # still pumped: a listened stream is never abandoned
