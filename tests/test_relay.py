"""Delivery when the store fails mid-stream: the connection ends cleanly and resumes without loss."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway import errors
from gateway.streams.pump import Pump
from gateway.streams.signals import Signal
from gateway.upstream.client import UpstreamResponse
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
        assert env.app.state.gateway.metrics.render().decode().count("mcpgw_store_errors_total 1.0") == 1


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


def counted_writes(monkeypatch: pytest.MonkeyPatch, event_log: Any) -> dict[str, list[int]]:
    """The events of every `open` and `append` of the event log, by method."""
    writes: dict[str, list[int]] = {"open": [], "append": []}
    real_open, real_append = event_log.open, event_log.append

    async def open_(*args: Any, **kwargs: Any) -> Any:
        writes["open"].append(len(kwargs.get("events", ())))
        return await real_open(*args, **kwargs)

    async def append(*args: Any, **kwargs: Any) -> Any:
        writes["append"].append(len(args[3]))
        return await real_append(*args, **kwargs)

    monkeypatch.setattr(event_log, "open", open_)
    monkeypatch.setattr(event_log, "append", append)
    return writes


async def test_events_that_came_with_the_headers_are_logged_by_the_streams_creation(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round trip sets the stream up and logs its first events: an answer that came whole
    with its headers costs no append at all."""

    async def arrived(self: Pump, response: UpstreamResponse) -> bytes:
        # Deterministic here: the body has reached the gateway before the stream is created (how
        # soon a real upstream's body follows its headers is the network's business).
        for _ in range(200):
            if chunk := response.take_buffered():
                return chunk
            await asyncio.sleep(0.005)
        raise AssertionError("the upstream's body never came")

    monkeypatch.setattr(Pump, "_arrived", arrived)
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix) as env:
        sid = await env.initialize()
        writes = counted_writes(monkeypatch, env.app.state.gateway.relay._log)
        r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("burst", count=3))
        events = [e for e in parse_sse(r.text) if e.get("data")]
        delivered = [json.loads(e["data"]) for e in events]
        assert [m["params"]["progress"] for m in delivered[:-1]] == [1, 2, 3] and delivered[-1]["id"] == 2
        assert writes == {"open": [4], "append": []}  # 3 progress + the answer; the end marker with them
        # resumable as any stream: from its first event, everything once more
        replay = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": events[0]["id"]})
        assert [json.loads(e["data"]) for e in parse_sse(replay.text) if e.get("data")] == delivered[1:]


async def test_a_stream_whose_events_come_later_is_created_empty_then_appended(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix) as env:
        sid = await env.initialize()
        writes = counted_writes(monkeypatch, env.app.state.gateway.relay._log)
        r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("stream", count=2, delay=0.1))
        delivered = [json.loads(e["data"]) for e in parse_sse(r.text) if e.get("data")]
        assert [m["params"]["progress"] for m in delivered[:-1]] == [1, 2] and delivered[-1]["id"] == 2
        assert writes["open"] == [0] and sum(writes["append"]) == 3


async def test_a_stream_that_cannot_be_created_answers_its_request_with_a_store_error(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix) as env:
        sid = await env.initialize()
        relay = env.app.state.gateway.relay

        async def refused(*args: Any, **kwargs: Any) -> Any:
            raise errors.StoreError("session store unavailable: injected by the test")

        monkeypatch.setattr(relay._log, "open", refused)
        r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("burst", count=2))
        assert r.status_code == 503 and r.json()["error"]["message"].startswith("session store unavailable")
        assert r.json()["id"] == 2
        assert not relay._pumps  # the pump that could not create its stream is gone


async def test_a_pump_that_stops_before_creating_its_stream_does_not_leave_its_request_waiting(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a pump cancelled before its first step (a shutdown): none of its own code runs."""

    async def gone(self: Pump, first: UpstreamResponse | None) -> None:
        if first is not None:
            first.close()

    monkeypatch.setattr(Pump, "run", gone)
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix) as env:
        sid = await env.initialize()
        r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("burst", count=2))
        assert r.status_code == 503 and "stopped early" in r.json()["error"]["message"]


class Arriving:
    """An upstream response whose body bytes arrive on the loop's next turn (or never)."""

    def __init__(self, now: bytes, next_turn: bytes) -> None:
        self.buffered, self.later = now, next_turn
        if next_turn:
            asyncio.get_running_loop().call_soon(self._arrive)

    def _arrive(self) -> None:
        self.buffered += self.later

    def take_buffered(self) -> bytes:
        out, self.buffered = self.buffered, b""
        return out


@pytest.mark.parametrize(
    ("now", "next_turn", "taken"),
    [(b"data: 1\n\n", b"data: 2\n\n", b"data: 1\n\n"), (b"", b"data: 2\n\n", b"data: 2\n\n"), (b"", b"", b"")],
)
async def test_a_new_stream_takes_what_arrived_or_arrives_within_one_loop_turn(
    now: bytes, next_turn: bytes, taken: bytes
) -> None:
    """What came with the headers, else what the loop reads on its next turn; never a wait for more."""
    response = Arriving(now, next_turn)
    assert await Pump._arrived(None, response) == taken  # type: ignore[arg-type]
