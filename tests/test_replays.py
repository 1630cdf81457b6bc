"""Replays.resolve on a real Redis: every outcome a repeat of a claimed request id can get."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.replay.replays import Attach, Recorded, Replays, body_hash
from gateway.store.claims import Claim, Claims
from gateway.store.eventlog import EventLog
from gateway.store.keys import Keys
from gateway.store.sessions import SessionRecord
from gateway.streams.liveness import Liveness
from gateway.wire import protocol
from tests.test_claims import session


def body(**arguments: object) -> protocol.Body:
    message = {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "t", "arguments": arguments}}
    return protocol.parse_body(json.dumps(message).encode(), "2025-11-25")


async def setup(
    redis: aioredis.Redis, keys: Keys, now: float = 100.0
) -> tuple[Claims, EventLog, Replays, SessionRecord]:
    claims = Claims(redis, keys, ttl=60, max_requests=10, max_answer=64)
    log = EventLog(redis, keys, maxlen=100, ttl=60)
    replays = Replays(claims, log, None, wait=1.0, poll=0.01, clock=lambda: now)
    sid = await session(redis, keys)
    record, _ = await claims.load_and_claim(
        sid, "alice", None, (4,), Claim(body_hash(body(x=1)), "SSSSSSSSSSSS", "r", 99.5)
    )
    return claims, log, replays, record


def test_body_hash_ignores_key_order_and_whitespace() -> None:
    a = protocol.parse_body(b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":1,"b":2}}', "2025-11-25")
    b = protocol.parse_body(b'{ "params": {"b": 2, "a": 1}, "method": "m", "id": 1, "jsonrpc": "2.0" }', "2025-11-25")
    assert body_hash(a) == body_hash(b) != body_hash(body(x=1))


async def test_a_claim_with_the_digest_of_an_earlier_version_is_the_same_body(
    redis: aioredis.Redis, keys: Keys
) -> None:
    """Rolling update: the first copy was claimed by a replica that digested `json`'s canonical
    form; the repeat, on this version, is still recognised as the same request. (For ASCII text
    and integers the two forms are the same bytes; they differ on non-ASCII text and some floats.)"""
    claims, _, replays, record = await setup(redis, keys)
    taken = await claims.get(record.id, 4)
    assert taken is not None
    for same_bytes, first in ((True, body(x=1)), (False, body(x="café", y=1e-05))):
        messages = [m.raw for m in first.messages]
        before_msgspec = hashlib.sha256(
            json.dumps(messages, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:32]
        assert (before_msgspec == body_hash(first)) is same_bytes
        answered = dataclasses.replace(taken, body_hash=before_msgspec, status=200, answer='{"ok": 1}')
        assert await replays.resolve(record, first, body_hash(first), answered) == Recorded(200, b'{"ok": 1}')
        with pytest.raises(errors.RequestIdReused):  # and another body is still another body
            await replays.resolve(record, body(x=2), body_hash(body(x=2)), answered)


def test_a_body_msgspec_refuses_is_digested_as_before() -> None:
    """NaN parses through `json` (msgspec refuses it): the digest is `json`'s canonical form, so
    NaN is never confused with null; an integer past 64 bits is exact either way."""
    nan = protocol.parse_body(b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":NaN}}', "2025-11-25")
    null = protocol.parse_body(b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":null}}', "2025-11-25")
    big = protocol.parse_body(
        b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":123456789012345678901234}}', "2025-11-25"
    )
    assert not nan.strict and big.strict and null.strict
    assert body_hash(nan) != body_hash(null)
    canonical = b'[{"id":1,"jsonrpc":"2.0","method":"m","params":{"a":123456789012345678901234}}]'
    assert body_hash(big) == hashlib.sha256(canonical).hexdigest()[:32]


async def test_other_body_is_refused(redis: aioredis.Redis, keys: Keys) -> None:
    claims, _, replays, record = await setup(redis, keys)
    taken = await claims.get(record.id, 4)
    assert taken is not None
    with pytest.raises(errors.RequestIdReused):
        await replays.resolve(record, body(x=2), body_hash(body(x=2)), taken)


async def test_recorded_answer_and_dropped_answer(redis: aioredis.Redis, keys: Keys) -> None:
    claims, _, replays, record = await setup(redis, keys)
    taken = await claims.get(record.id, 4)
    assert taken is not None
    digest = body_hash(body(x=1))
    answered = dataclasses.replace(taken, status=200, answer='{"ok": 1}')
    assert await replays.resolve(record, body(x=1), digest, answered) == Recorded(200, b'{"ok": 1}')
    with pytest.raises(errors.RequestIdReused, match="not kept"):
        await replays.resolve(record, body(x=1), digest, dataclasses.replace(taken, dropped=True))


async def test_waits_for_the_stream_then_attaches(redis: aioredis.Redis, keys: Keys) -> None:
    _, log, replays, record = await setup(redis, keys)
    taken = Claim(body_hash(body(x=1)), "SSSSSSSSSSSS", "r", 99.5)
    await log.open(record.id, "SSSSSSSSSSSS", kind="post", pending=(4,), owner="r")
    assert await replays.resolve(record, body(x=1), taken.body_hash, taken) == Attach("SSSSSSSSSSSS")


async def test_no_outcome_past_the_bound_is_an_error_kept_for_later_repeats(redis: aioredis.Redis, keys: Keys) -> None:
    claims, _, replays, record = await setup(redis, keys, now=200.0)
    taken = await claims.get(record.id, 4)
    assert taken is not None
    outcome = await replays.resolve(record, body(x=1), taken.body_hash, taken)
    assert isinstance(outcome, Recorded) and outcome.status == 504
    kept = await claims.get(record.id, 4)
    assert kept is not None and kept.status == 504 and kept.answer is not None and '"id": 4' in kept.answer


async def test_released_claim_means_retry(redis: aioredis.Redis, keys: Keys) -> None:
    claims, _, replays, record = await setup(redis, keys, now=99.6)
    taken = await claims.get(record.id, 4)
    assert taken is not None
    await claims.release(record.id, (4,))
    with pytest.raises(errors.UpstreamUnavailable):
        await replays.resolve(record, body(x=1), taken.body_hash, taken)


async def test_dead_claimer_means_unknown_at_once(redis: aioredis.Redis, keys: Keys) -> None:
    """The first copy's replica has no liveness key: no need to wait for --request-timeout."""
    claims, log, _, record = await setup(redis, keys, now=99.6)
    replays = Replays(claims, log, Liveness(redis, keys, "me", ttl=1, interval=0.2), wait=60.0, poll=0.01)
    taken = await claims.get(record.id, 4)
    assert taken is not None and taken.replica == "r"
    outcome = await replays.resolve(record, body(x=1), taken.body_hash, taken)
    assert isinstance(outcome, Recorded) and outcome.status == 504
