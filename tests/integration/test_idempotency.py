"""Idempotency-Key through real replicas: at most one execution per (client, key), any replica.

The SDK upstream counts its `slow_count` runs per tag (GET /executions). Stateless (2026-07-28)
requests through three replicas behind HAProxy: a repeat in flight gets 409, a repeat after gets
the stored response (its SSE events or JSON body), the same key with another body gets 422. In a
sessionful era a new session repeating a call under the same key gets the stored JSON answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import redis.asyncio as aioredis

from tests.integration.careful_client import CarefulClient, SseParser
from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.test_stateless import keys_under, modern_call, modern_headers


async def executions(upstream: str) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        data: dict[str, int] = (await http.get(upstream.removesuffix("/mcp") + "/executions")).json()
        return data


async def post(http: httpx.AsyncClient, url: str, headers: dict[str, str], body: Any) -> tuple[int, str, list[Any]]:
    """(status, content type, JSON-RPC messages) of one POST, read to its end."""
    async with http.stream("POST", url, json=body, headers=headers) as resp:
        ctype = resp.headers.get("content-type", "")
        if not ctype.startswith("text/event-stream"):
            return resp.status_code, ctype, [json.loads(await resp.aread())]
        parser = SseParser()
        messages: list[Any] = []
        async for chunk in resp.aiter_text():
            messages.extend(e.json() for e in parser.feed(chunk) if e.data.strip())
        return resp.status_code, ctype, messages


def counted(messages: list[Any]) -> tuple[list[int], str]:
    progress = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    [answer] = [m for m in messages if "result" in m or "error" in m]
    return progress, answer["result"]["content"][0]["text"]


async def test_stateless_key_runs_once_across_replicas(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis: aioredis.Redis,
    redis_url: str,
) -> None:
    upstream = sdk_upstream(event_store=False)
    replicas = gateway_cluster(3, {"default": upstream}, key_prefix)
    lb = load_balancer(replicas)
    call = modern_call("slow_count", {"steps": 5, "delay": 0.2, "tag": "stateless"}, rid=9)
    keyed = modern_headers("slow_count", **{"Idempotency-Key": '"order-42"'})
    async with httpx.AsyncClient(timeout=30) as http:
        assert await keys_under(redis_url, key_prefix) == []  # nothing written without the header
        first = asyncio.ensure_future(post(http, replicas[0].url, keyed, call))
        await asyncio.sleep(0.4)
        status, _, [busy] = await post(http, replicas[1].url, keyed, call)
        assert status == 409 and busy["id"] == 9 and busy["error"]["code"] == -32600, busy
        status, ctype, messages = await first
        assert status == 200 and ctype.startswith("text/event-stream")
        assert counted(messages) == ([1, 2, 3, 4, 5], "counted 5")
        for url in (lb, replicas[2].url):  # after it: the stored events, from any replica
            status, ctype, again = await post(http, url, keyed, call)
            assert status == 200 and ctype.startswith("text/event-stream")
            assert again == messages
        other = modern_call("slow_count", {"steps": 1, "delay": 0, "tag": "other"}, rid=9)
        status, _, [refused] = await post(http, lb, keyed, other)
        assert status == 422 and refused["error"]["code"] == -32600, refused
        # Without the header nothing is stored and every request runs.
        for _ in range(2):
            status, _, messages = await post(http, lb, modern_headers("slow_count"), call)
            assert status == 200 and counted(messages)[1] == "counted 5"
    assert await executions(upstream) == {"stateless": 3}
    stored = [k async for k in redis.scan_iter(match=f"{key_prefix}:idem:*")]
    assert len(stored) == 1 and 0 < await redis.pttl(stored[0]) <= 86_400_000


async def test_stateless_json_answer_is_stored_and_ttl_is_configurable(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, redis: aioredis.Redis
) -> None:
    upstream = sdk_upstream(event_store=False, json_response=True)
    a, b = gateway_cluster(2, {"default": upstream}, key_prefix, extra_args=["--idempotency-ttl", "120"])
    call = modern_call("slow_count", {"steps": 2, "delay": 0.05, "tag": "json"}, rid=3)
    keyed = modern_headers("slow_count", **{"Idempotency-Key": "plain-token"})
    async with httpx.AsyncClient(timeout=30) as http:
        first = await post(http, a.url, keyed, call)
        again = await post(http, b.url, keyed, call)
    assert first == again and first[0] == 200 and first[1].startswith("application/json")
    assert counted(first[2]) == ([], "counted 2")
    assert await executions(upstream) == {"json": 1}
    [stored] = [k async for k in redis.scan_iter(match=f"{key_prefix}:idem:*")]
    assert 0 < await redis.pttl(stored) <= 120_000


async def test_bad_key_is_a_spec_shaped_400(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    [gw] = gateway_cluster(1, {"default": sdk_upstream(event_store=False)}, key_prefix)
    call = modern_call("slow_count", {"steps": 1, "delay": 0, "tag": "bad"}, rid=4)
    async with httpx.AsyncClient(timeout=30) as http:
        status, _, [error] = await post(http, gw.url, modern_headers("slow_count", **{"Idempotency-Key": '""'}), call)
    assert status == 400 and error["id"] == 4 and error["error"]["code"] == -32600, error


async def test_sessionful_key_answers_a_new_session_from_the_store(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """A client that lost its session re-sends the call under the same key from a new session:
    the stored JSON answer comes back and the tool does not run again."""
    upstream = sdk_upstream(event_store=False, json_response=True)
    a, b = gateway_cluster(2, {"default": upstream}, key_prefix)
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "slow_count", "arguments": {"steps": 2, "delay": 0.05, "tag": "sessionful"}},
    }
    answers = []
    async with httpx.AsyncClient(timeout=30) as http:
        for url in (a.url, b.url):
            async with CarefulClient(url) as client:
                await client.initialize()
                headers = {**client.headers(), "Idempotency-Key": '"retry-me"'}
                status, _, [answer] = await post(http, url, headers, call)
                assert status == 200
                answers.append(answer)
    assert answers[0] == answers[1] and answers[0]["result"]["content"][0]["text"] == "counted 2"
    assert await executions(upstream) == {"sessionful": 1}
