"""Audit records (fields, no token, arguments only as a hash) and the Redis sink's stream."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.audit import command, reader, records
from gateway.audit.sinks import QUEUE_SIZE, RedisSink, StdoutSink
from gateway.errors import ConfigError
from gateway.policy.counters import PolicyCounters
from gateway.store.client import Redis, connect
from gateway.store.keys import Keys
from tests.test_policy import ctx

FIELDS = {
    "type", "ts", "replica", "principal", "session", "pool", "era", "method", "name", "request_id", "decision",
    "rule", "outcome", "status", "duration_ms", "trace_id", "args_sha256",
}  # fmt: skip


def one(with_arguments: bool = False, body: bytes | None = b'{"result":{}}', status: int = 200) -> dict[str, object]:
    found = ctx("tools/call", {"name": "search", "arguments": {"q": "secret words"}})
    return records.record(
        replica="r1",
        principal="iss|alice",
        session="s1",
        variables=found,
        request_id=7,
        decision="allow",
        rule="default",
        answered=records.Answered(status, body, "2025-11-25", 0.0123),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        with_arguments=with_arguments,
        now=1.0,
    )


def test_record_fields_and_no_arguments_by_default() -> None:
    record = one()
    assert set(record) == FIELDS
    assert record["name"] == "search" and record["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert record["outcome"] == "ok" and record["duration_ms"] == 12.3
    assert "secret words" not in json.dumps(record) and len(str(record["args_sha256"])) == 64
    assert one(with_arguments=True)["arguments"] == {"q": "secret words"}
    assert one(body=b'{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"x"}}')["outcome"] == "error"
    assert one(body=None, status=403)["outcome"] == "error"
    assert one(body=None)["outcome"] == "ok"  # a stream that started


def test_stdout_sink_writes_one_json_line() -> None:
    out = io.StringIO()
    registry = CollectorRegistry()
    StdoutSink(PolicyCounters(registry), out).write(records.encode(one()))
    assert json.loads(out.getvalue())["type"] == "audit"
    assert registry.get_sample_value("mcpgw_audit_records_total", {"sink": "stdout"}) == 1


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url, max_connections=4, cluster=False, sentinels=(), sentinel_master="m", client_name="t")
    try:
        yield client
    finally:
        await client.aclose()


async def test_redis_sink_writes_the_stream_and_flushes_on_cancel(store: Redis, key_prefix: str) -> None:
    registry = CollectorRegistry()
    keys = Keys(key_prefix)
    sink = RedisSink(store, keys, PolicyCounters(registry), maxlen=1000)
    writer = asyncio.create_task(sink.run())
    for _ in range(5):
        sink.write(records.encode(one()))
    await asyncio.sleep(0)  # the writer takes the first record; the rest are flushed on cancel at the latest
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    entries = await store.xrange(keys.audit())
    assert entries is not None and len(entries) == 5
    first = entries[0][1]
    assert first is not None and json.loads(first[b"r"])["principal"] == "iss|alice"
    assert registry.get_sample_value("mcpgw_audit_records_total", {"sink": "redis"}) == 5


def test_since_in_every_form() -> None:
    assert reader.since_ms("15m", now=10_000) == (10_000 - 900) * 1000
    assert reader.since_ms("1700000000") == 1_700_000_000_000
    assert reader.since_ms("2026-01-01T00:00:00+00:00") == 1_767_225_600_000
    assert reader.since_ms(None) == 0
    with pytest.raises(ConfigError):
        reader.since_ms("yesterday")


async def test_reader_pages_filters_and_follows(store: Redis, key_prefix: str) -> None:
    keys = Keys(key_prefix)
    for i in range(5):
        await store.xadd(keys.audit(), {"r": json.dumps({"principal": f"iss|{'bob' if i % 2 else 'alice'}", "n": i})})
    bob = command.keeps("bob")
    found = [r["n"] async for r in reader.records(store, keys, since=0, follow=False, keep=bob)]
    assert found == [1, 3]
    following = reader.records(store, keys, since=0, follow=True, keep=command.keeps(None))
    assert [(await anext(following))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    later = asyncio.ensure_future(anext(following))
    await store.xadd(keys.audit(), {"r": json.dumps({"principal": "iss|carol", "n": 5})})
    assert (await asyncio.wait_for(later, 5))["n"] == 5
    await following.aclose()  # type: ignore[attr-defined]  # an async generator, typed as its iterator
    text = reader.line({"ts": 1.5, "principal": "iss|bob", "decision": "deny", "rule": "default"}, as_json=False)
    assert "iss|bob" in text and "deny" in text and "rule=default" in text


async def test_a_full_queue_drops_and_counts_never_blocks(store: Redis, key_prefix: str) -> None:
    registry = CollectorRegistry()
    sink = RedisSink(store, Keys(key_prefix), PolicyCounters(registry), maxlen=1000)
    line = records.encode(one())
    for _ in range(QUEUE_SIZE + 3):  # no writer running: the queue fills
        sink.write(line)
    assert registry.get_sample_value("mcpgw_audit_dropped_total", {"sink": "redis"}) == 3
