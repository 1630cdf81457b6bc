"""Delivery when the store fails mid-stream: the connection ends cleanly and resumes without loss."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import errors
from tests.gateway_env import call, parse_sse, running_gateway


async def test_store_error_mid_stream_ends_with_retry_hint_then_resumes(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(
        redis_url=redis_url, key_prefix=key_prefix, lease_ttl=0.5, keepalive_interval=0.5, retry_ms=250
    ) as env:
        sid = await env.initialize()
        event_log = env.app.state.gateway.relay._log
        real_read = event_log.read
        reads = 0

        async def failing_after_two(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            if reads > 2:
                raise errors.StoreError("session store unavailable: injected by the test")
            return await real_read(*args, **kwargs)

        monkeypatch.setattr(event_log, "read", failing_after_two)
        r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("stream", count=6, delay=0.1))
        assert r.status_code == 200
        events = parse_sse(r.text)
        assert events[-1] == {"retry": "250"}  # a clean end with a reconnection hint, no error body
        delivered = [e for e in events if e.get("data")]
        assert len(delivered) < 7
        last_id = [e["id"] for e in events if "id" in e][-1]

        monkeypatch.setattr(event_log, "read", real_read)  # the store is back
        r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": last_id})
        rest = [e for e in parse_sse(r.text) if e.get("data")]
        everything = [json.loads(e["data"]) for e in delivered + rest]
        # every event exactly once, in order, across the two connections: 6 progress, then the answer
        assert [m["params"]["progress"] for m in everything[:-1]] == [1, 2, 3, 4, 5, 6]
        assert everything[-1]["id"] == 2 and everything[-1]["result"]["echo"]["count"] == 6
        assert (await env.client.get(f"{env.url}/metrics")).text.count("mcpgw_store_errors_total 1.0") == 1
