"""Delivery when the store fails mid-stream: the connection ends cleanly and resumes without loss."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import errors
from gateway.streams.signals import Signal
from tests.gateway_env import call, parse_sse, running_gateway


def counted_reads(monkeypatch: pytest.MonkeyPatch, event_log: Any, fail_after: int | None = None) -> list[int]:
    """Count the delivery's reads of the event log (a one-item list); fail those after `fail_after`."""
    real_read = event_log.read
    reads = [0]

    async def read(*args: Any, **kwargs: Any) -> Any:
        reads[0] += 1
        if fail_after is not None and reads[0] > fail_after:
            raise errors.StoreError("session store unavailable: injected by the test")
        return await real_read(*args, **kwargs)

    monkeypatch.setattr(event_log, "read", read)
    return reads


async def test_store_error_mid_stream_ends_with_retry_hint_then_resumes(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(
        redis_url=redis_url, key_prefix=key_prefix, lease_ttl=0.5, keepalive_interval=0.5, retry_ms=250
    ) as env:
        sid = await env.initialize()
        event_log = env.app.state.gateway.relay._log
        real_read = event_log.read
        counted_reads(monkeypatch, event_log, fail_after=2)
        # the delivery reads every batch from Redis, as one that fell behind the pump does (a
        # delivery that keeps up gets the entries of the pump's last append from memory)
        monkeypatch.setattr(Signal, "entries_after", lambda self, after: None)
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


async def test_a_delivery_that_keeps_up_reads_nothing_back(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pump hands its local deliveries the entries it just appended: one Redis round trip per
    event batch (the append), not two."""
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix) as env:
        sid = await env.initialize()
        reads = counted_reads(monkeypatch, env.app.state.gateway.relay._log)
        r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("stream", count=8, delay=0.2))
        delivered = [json.loads(e["data"]) for e in parse_sse(r.text) if e.get("data")]
        assert [m["params"]["progress"] for m in delivered[:-1]] == list(range(1, 9))
        assert delivered[-1]["id"] == 2
        # 9 entries, each its own append; a read only if the delivery fell a whole batch behind (a
        # stall of more than 0.2 s on this machine), never one per event
        assert reads[0] <= 2, reads
