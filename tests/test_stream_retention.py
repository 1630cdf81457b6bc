"""Redis memory bounded by design (issue 35): an ended stream keeps its log only for the
resumption window (`--stream-retention`), a session renewal never extends it again, and a
DELETE leaves no key of the session. Real uvicorn, real Redis, TTLs read from Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.gateway_env import Env, call, parse_sse, running_gateway

RETENTION = 20.0
SESSION_TTL = 600.0


@pytest.fixture
async def env(redis_url: str, key_prefix: str) -> AsyncIterator[Env]:
    async with running_gateway(
        redis_url=redis_url, key_prefix=key_prefix, stream_retention=RETENTION, session_ttl=SESSION_TTL
    ) as env:
        yield env


async def session_keys(redis: aioredis.Redis, key_prefix: str, sid: str) -> dict[str, int]:
    """Every key of the session, with its PTTL in ms."""
    found = [key async for key in redis.scan_iter(match=f"{key_prefix}:*", count=1000)]
    mine = [k for k in found if sid.encode() in k]
    return {k.decode(): int(await redis.pttl(k)) for k in mine}


async def test_an_ended_stream_keeps_its_log_for_the_retention_only_and_delete_removes_all(
    env: Env, redis: aioredis.Redis, key_prefix: str
) -> None:
    sid = await env.initialize()
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("stream", count=3))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert '"result"' in parse_sse(r.text)[-1]["data"]  # every request answered: the stream ended
    keys = await session_keys(redis, key_prefix, sid)
    logs = {k: ttl for k, ttl in keys.items() if ":x:" in k or ":m:" in k}
    assert len(logs) == 2, keys  # the stream's events and its meta
    assert all(0 < ttl <= RETENTION * 1000 for ttl in logs.values()), logs
    assert not any(":lease:" in k for k in keys), keys  # the ended stream's lease is gone
    assert keys[f"{key_prefix}:{{{sid}}}:session"] > RETENTION * 1000  # the session lives on
    # A later request renews the session: the ended stream's keys keep their short TTL.
    env.app.state.gateway.sessionful._sessions.renewals.forget(sid)  # make the renewal due now
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("echo", rid=3))
    assert r.status_code == 200
    again = await session_keys(redis, key_prefix, sid)
    assert again[f"{key_prefix}:{{{sid}}}:session"] > SESSION_TTL * 1000
    assert all(0 < again[k] <= RETENTION * 1000 for k in logs), again
    # DELETE removes every key of the session at once.
    assert (await env.client.delete(env.mcp, headers=env.headers(sid))).status_code == 200
    assert await session_keys(redis, key_prefix, sid) == {}
