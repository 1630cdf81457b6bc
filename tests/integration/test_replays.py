"""A replayed request (same session, same JSON-RPC id, same body) never runs twice: real processes.

Two gateway replicas share Redis in front of an SDK upstream without an event store (the SDK's
default); the upstream counts its `slow_count` runs per tag (GET /executions). A repeat sent to
the other replica while the first copy runs is attached to the first copy's stream from its first
event; a repeat after it finished gets the stream replayed (SSE) or the recorded answer (JSON).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import redis.asyncio as aioredis

from gateway.store.keys import Keys
from tests.integration.careful_client import CarefulClient, SseParser
from tests.integration.conftest import StartGateways, StartSdkUpstream

STEPS = 6


def call(request_id: int, tag: str, steps: int = STEPS, delay: float = 0.15) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": "slow_count",
            "arguments": {"steps": steps, "delay": delay, "tag": tag},
            "_meta": {"progressToken": f"p-{request_id}"},
        },
    }


async def post(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[int, list[Any]]:
    """POST and read the whole answer: (status, JSON-RPC messages received, in order)."""
    async with http.stream("POST", url, json=body, headers=headers) as resp:
        if not resp.headers.get("content-type", "").startswith("text/event-stream"):
            return resp.status_code, [json.loads(await resp.aread())]
        parser = SseParser()
        messages: list[Any] = []
        async for chunk in resp.aiter_text():
            messages.extend(e.json() for e in parser.feed(chunk) if e.data.strip())
        return resp.status_code, messages


def progress_of(messages: list[Any]) -> list[int]:
    return [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]


def result_of(messages: list[Any], request_id: int) -> dict[str, Any]:
    answers = [m for m in messages if m.get("id") == request_id and ("result" in m or "error" in m)]
    assert len(answers) == 1, messages
    answer = answers[0]
    assert isinstance(answer, dict)
    return answer


async def executions(upstream: str) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        data: dict[str, int] = (await http.get(upstream.removesuffix("/mcp") + "/executions")).json()
        return data


async def test_repeat_during_and_after_a_streamed_call_runs_it_once(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=False)
    a, b = gateway_cluster(2, {"default": upstream}, key_prefix)
    async with CarefulClient(a.url) as client, httpx.AsyncClient(timeout=30) as http:
        await client.initialize()
        headers = client.headers()
        first = asyncio.ensure_future(post(http, a.url, headers, call(7, "once")))
        await asyncio.sleep(0.4)  # the first copy runs (a few progress steps done) on replica a
        during = await post(http, b.url, headers, call(7, "once"))  # the repeat lands on replica b
        first_status, first_messages = await first
        after = await post(http, a.url, headers, call(7, "once"))
        for status, messages in ((first_status, first_messages), during, after):
            assert status == 200
            assert progress_of(messages) == list(range(1, STEPS + 1)), messages
            assert result_of(messages, 7)["result"]["content"][0]["text"] == f"counted {STEPS}"
        assert await executions(upstream) == {"once": 1}

        # The same id with another body is refused (basic §Requests: ids are not reused), nothing runs.
        status, [refusal] = await post(http, b.url, headers, call(7, "other"))
        assert status == 409
        assert refusal["id"] == 7 and refusal["error"]["code"] == -32600, refusal
        assert await executions(upstream) == {"once": 1}

        # A new id runs normally.
        status, messages = await post(http, b.url, headers, call(8, "twice", steps=2, delay=0.01))
        assert status == 200 and progress_of(messages) == [1, 2]
        assert await executions(upstream) == {"once": 1, "twice": 1}


async def test_repeat_of_a_json_answer_gets_the_recorded_answer(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=False, json_response=True)
    a, b = gateway_cluster(2, {"default": upstream}, key_prefix)
    async with CarefulClient(a.url) as client, httpx.AsyncClient(timeout=30) as http:
        await client.initialize()
        headers = client.headers()
        first = asyncio.ensure_future(post(http, a.url, headers, call(3, "json", steps=4, delay=0.2)))
        await asyncio.sleep(0.3)
        during = await post(http, b.url, headers, call(3, "json", steps=4, delay=0.2))  # waits for the answer
        answers = [await first, during, await post(http, b.url, headers, call(3, "json", steps=4, delay=0.2))]
        for status, [answer] in answers:
            assert status == 200
            assert answer == {"jsonrpc": "2.0", "id": 3, "result": answer["result"]}
            assert answer["result"]["content"][0]["text"] == "counted 4"
        assert await executions(upstream) == {"json": 1}


async def test_claims_are_per_session_and_deleted_with_it(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, redis: aioredis.Redis
) -> None:
    upstream = sdk_upstream(event_store=False)
    [gw] = gateway_cluster(1, {"default": upstream}, key_prefix)
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(2):  # two sessions may both use id 1: each runs
            async with CarefulClient(gw.url) as client:
                await client.initialize()
                status, messages = await post(http, gw.url, client.headers(), call(1, "per-session", 1, 0.01))
                assert status == 200 and "result" in result_of(messages, 1)
                claims_key = Keys(key_prefix).requests(str(client.session_id))
                assert await redis.exists(claims_key) == 1
                assert await client.delete_session() == 200
                assert await redis.exists(claims_key) == 0
    assert await executions(upstream) == {"per-session": 2}
