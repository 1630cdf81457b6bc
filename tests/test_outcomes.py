"""replay.outcomes on a real Redis: when the first copy's JSON answer is kept, and what a repeat
that comes meanwhile gets."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from starlette.responses import Response

from gateway.errors import JsonRpcId
from gateway.replay.idempotent import Idempotency, Ticket
from gateway.replay.outcomes import Outcome
from gateway.replay.replays import Recorded, Replays, body_hash
from gateway.store.claims import Claim, Claims
from gateway.store.client import connect
from gateway.store.eventlog import EventLog
from gateway.store.idempotency import DONE, RUNNING, IdempotencyStore
from gateway.store.keys import Keys
from gateway.store.sessions import SessionStore
from tests.test_claims import session
from tests.test_replays import body


async def first_copy(redis: aioredis.Redis, keys: Keys) -> tuple[Claims, Claim, str, Idempotency]:
    """Session and claim of request id 4 (`tests.test_replays.body`), claimed by a live first copy."""
    claims = Claims(redis, keys, ttl=60, max_requests=10, max_answer=1024)
    sid = await session(redis, keys)
    claim = Claim(body_hash(body()), "SSSSSSSSSSSS", "r1", time.time())
    _, taken = await claims.load_and_claim(sid, "alice", None, (4,), claim)
    assert taken is None
    return claims, claim, sid, Idempotency(IdempotencyStore(redis, keys, ttl=30), max_response=1024)


async def test_the_claims_answer_is_kept_once_sent_and_a_repeat_meanwhile_waits_for_it(
    redis: aioredis.Redis, keys: Keys
) -> None:
    claims, claim, sid, idempotency = await first_copy(redis, keys)
    answer = await Outcome(claims, sid, (4,), claim, idempotency).deliver(Response(b'{"ok":1}', status_code=200))
    pending = await claims.get(sid, 4)
    assert pending is not None and pending.status == 0  # not kept before the client has it
    assert answer.background is not None  # the response runs it once sent (starlette's background)

    record = await SessionStore(redis, keys, ttl=60).load(sid, principal="alice")
    replays = Replays(claims, EventLog(redis, keys, maxlen=10, ttl=60), None, wait=5.0, poll=0.01)
    repeat = asyncio.ensure_future(replays.resolve(record, body(), body_hash(body()), pending))
    await asyncio.sleep(0.05)
    assert not repeat.done()  # no outcome yet, the first copy lives: the repeat polls the claim
    await answer.background()
    assert await repeat == Recorded(200, b'{"ok":1}')


async def test_on_the_lane_the_answer_is_cast_with_it_and_a_repeat_gets_it(
    redis_url: str, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record leaves right after the answer (the lane's cast, run by the response's
    background once it was sent): nothing for the client to wait for, no round trip for the
    record, and a repeat finds the answer."""
    laned = connect(redis_url, max_connections=4, client_name="mcpgw-test-outcomes")
    try:
        claims, claim, sid, idempotency = await first_copy(laned, keys)  # connects the lane
        answer = await Outcome(claims, sid, (4,), claim, idempotency).deliver(Response(b'{"ok":3}', status_code=200))
        assert answer.background is not None
        pending = await claims.get(sid, 4)
        assert pending is not None and pending.status == 0  # nothing of the record before the answer left

        async def no_round_trip(session_id: str, ids: tuple[JsonRpcId, ...], claim: Claim) -> None:
            raise AssertionError("the record took a round trip: it should have been cast")

        monkeypatch.setattr(claims, "record", no_round_trip)
        await answer.background()  # what the response does once sent
        record = await SessionStore(laned, keys, ttl=60).load(sid, principal="alice")
        replays = Replays(claims, EventLog(laned, keys, maxlen=10, ttl=60), None, wait=5.0, poll=0.01)
        taken = await claims.get(sid, 4)
        assert taken is not None
        assert await replays.resolve(record, body(), body_hash(body()), taken) == Recorded(200, b'{"ok":3}')
    finally:
        await laned.aclose()


async def test_with_an_idempotency_key_the_answer_is_kept_before_it_is_sent(redis: aioredis.Redis, keys: Keys) -> None:
    """An Idempotency-Key repeat is not polled (it would get 409): its record is done first."""
    claims, claim, sid, idempotency = await first_copy(redis, keys)
    store = IdempotencyStore(redis, keys, ttl=30)
    assert await store.begin("key-digest", "fp") is None
    running = await store.begin("key-digest", "fp")
    assert running is not None and running.state == RUNNING
    outcome = Outcome(claims, sid, (4,), claim, idempotency, ticket=Ticket("key-digest"))
    answer = await outcome.deliver(Response(b'{"ok":2}', status_code=200))
    assert answer.background is None
    kept = await claims.get(sid, 4)
    assert kept is not None and (kept.status, kept.answer) == (200, '{"ok":2}')
    done = await store.begin("key-digest", "fp")
    assert done is not None and (done.state, done.body) == (DONE, b'{"ok":2}')
