"""Claims on a real Redis: one round trip loads the session and claims, bounded per session."""

from __future__ import annotations

import dataclasses
import json

import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.store.claims import Claim, Claims, claim_field
from gateway.store.keys import Keys
from gateway.store.sessions import SessionStore, new_record
from gateway.wire import protocol
from tests.clocks import Clock


def claim(digest: str = "h1", stream: str = "AAAAAAAAAAAA") -> Claim:
    return Claim(body_hash=digest, stream=stream, replica="r1", at=1.0)


async def session(redis: aioredis.Redis, keys: Keys, principal: str = "alice") -> str:
    record = new_record(
        protocol.new_session_id(),
        pool="default",
        instance="http://up/mcp",
        upstream_sid="u",
        protocol="2025-11-25",
        principal=principal,
        init_params={},
    )
    await SessionStore(redis, keys, ttl=60).create(record)
    return record.id


async def test_first_claim_wins_and_repeats_see_it(redis: aioredis.Redis, keys: Keys) -> None:
    claims = Claims(redis, keys, ttl=60, max_requests=10, max_answer=100)
    sid = await session(redis, keys)
    record, taken = await claims.load_and_claim(sid, "alice", None, (1,), claim("h1"))
    assert record.id == sid and taken is None
    _, taken = await claims.load_and_claim(sid, "alice", "default", (1,), claim("h2", "BBBBBBBBBBBB"))
    assert taken == claim("h1")
    # 1 and "1" are different JSON-RPC ids
    _, taken = await claims.load_and_claim(sid, "alice", None, ("1",), claim("h3"))
    assert taken is None
    assert 60_000 < await redis.pttl(keys.requests(sid)) <= 66_000  # renewed: TTL x 1.1


async def test_outcome_recorded_and_release(redis: aioredis.Redis, keys: Keys) -> None:
    claims = Claims(redis, keys, ttl=60, max_requests=10, max_answer=100)
    sid = await session(redis, keys)
    await claims.load_and_claim(sid, "alice", None, (1, 2), claim())
    answered = Claim(body_hash="h1", stream="AAAAAAAAAAAA", replica="r1", at=1.0, status=200, answer="{}")
    await claims.record(sid, (1, 2), answered)
    assert await claims.get(sid, 2) == answered
    await claims.release(sid, (1, 2))
    assert await claims.get(sid, 1) is None


async def test_unknown_foreign_or_other_pool_session_claims_nothing(redis: aioredis.Redis, keys: Keys) -> None:
    claims = Claims(redis, keys, ttl=60, max_requests=10, max_answer=100)
    sid = await session(redis, keys)
    for who, pool in (("mallory", None), ("alice", "other")):
        with pytest.raises(errors.SessionNotFound):
            await claims.load_and_claim(sid, who, pool, (1,), claim())
    with pytest.raises(errors.SessionNotFound):
        await claims.load_and_claim(protocol.new_session_id(), "alice", None, (1,), claim())
    assert await redis.exists(keys.requests(sid)) == 0


async def test_only_the_newest_claims_are_kept(redis: aioredis.Redis, keys: Keys) -> None:
    claims = Claims(redis, keys, ttl=60, max_requests=3, max_answer=100)
    sid = await session(redis, keys)
    for request_id in range(10):
        await claims.load_and_claim(sid, "alice", None, (request_id,), claim())
    kept = [i for i in range(10) if await claims.get(sid, i) is not None]
    assert kept == [7, 8, 9]
    assert await redis.hlen(keys.requests(sid)) == 3 * 2 + 1  # claims, their order entries, the counter


def test_claim_json_keeps_the_set_fields_only() -> None:
    plain = Claim(body_hash="h", stream="s", replica="r", at=1.5)
    answered = dataclasses.replace(plain, status=200, answer='{"ok":1}')
    dropped = dataclasses.replace(plain, dropped=True, at=0.0)
    for claim in (plain, answered, dropped):
        expected = {k: v for k, v in dataclasses.asdict(claim).items() if v not in (None, 0, False)}
        assert json.loads(claim.to_json()) == expected
        assert Claim.from_json(claim.to_json()) == claim


def test_claim_json_escapes_like_json_dumps() -> None:
    odd = Claim(body_hash="h", stream="", replica='host "é"\n', at=1764692000.123456, status=504, answer="\u2028\x00é")
    assert json.loads(odd.to_json()) == {
        "body_hash": "h",
        "replica": 'host "é"\n',
        "at": 1764692000.123456,
        "status": 504,
        "answer": "\u2028\x00é",
    }
    assert Claim.from_json(odd.to_json()) == odd
    assert odd.to_json().isascii()


@pytest.mark.parametrize("request_id", [0, 17, -3, 2**70, "17", 'a"é', ""])
def test_claim_field_is_the_ids_json(request_id: errors.JsonRpcId) -> None:
    assert claim_field(request_id) == "r:" + json.dumps(request_id)  # 17 and "17" stay apart


def test_an_answered_claims_json_is_the_claims_with_its_answer_added() -> None:
    claim = Claim(body_hash="h", stream="s", replica='r "1"', at=1764692000.25)
    claim.to_json()  # written once, as the claim script's argument is
    answered = claim.answered(200, '{"id":"\u00e9"}')
    fresh = Claim(body_hash="h", stream="s", replica='r "1"', at=1764692000.25, status=200, answer='{"id":"\u00e9"}')
    assert answered == fresh and answered.to_json() == fresh.to_json()
    dropped = dataclasses.replace(answered, dropped=True)  # a replaced claim writes its own JSON
    assert json.loads(dropped.to_json())["dropped"] is True


async def test_claims_renew_the_sliding_ttls_once_per_tenth_of_it(redis: aioredis.Redis, keys: Keys) -> None:
    """The JSON call's one round trip renews the session's TTLs only when this replica's renewal
    is due (shared with the session loads); the claims hash gets its TTL when it is made."""
    clock = Clock()
    store = SessionStore(redis, keys, ttl=100, clock=clock)
    claims = Claims(redis, keys, ttl=100, max_requests=10, max_answer=100, renewals=store.renewals)
    sid = await session(redis, keys)
    await redis.hset(keys.streams(sid), "s", "{}")  # a stream registry, renewed with the record
    await store.load(sid, "alice")  # renewed by the load: not due for the claims
    await redis.pexpire(keys.session(sid), 50_000)  # as if time had passed in Redis
    await redis.pexpire(keys.streams(sid), 50_000)
    clock.now += 9.9
    await claims.load_and_claim(sid, "alice", None, (1,), claim())
    assert await redis.pttl(keys.session(sid)) <= 50_000  # not renewed
    assert await redis.pttl(keys.streams(sid)) <= 50_000
    assert 100_000 < await redis.pttl(keys.requests(sid)) <= 110_000  # made now: its TTL set
    await redis.pexpire(keys.requests(sid), 50_000)
    await claims.load_and_claim(sid, "alice", None, (2,), claim())
    assert await redis.pttl(keys.requests(sid)) <= 50_000  # not made, not due: left as it is
    clock.now += 0.2
    await claims.load_and_claim(sid, "alice", None, (3,), claim())
    for key in (keys.session(sid), keys.streams(sid), keys.requests(sid)):
        assert 100_000 < await redis.pttl(key) <= 110_000  # due: all three renewed, TTL x 1.1
    await redis.pexpire(keys.session(sid), 50_000)
    clock.now += 5
    await store.load(sid, "alice")  # the claim's renewal counts for the loads too
    assert await redis.pttl(keys.session(sid)) <= 50_000


async def test_a_replay_renews_the_claims_hash_when_due(redis: aioredis.Redis, keys: Keys) -> None:
    clock = Clock()
    claims = Claims(redis, keys, ttl=100, max_requests=10, max_answer=100, renewals=None)
    claims._renewals.clock = clock
    sid = await session(redis, keys)
    await claims.load_and_claim(sid, "alice", None, (1,), claim())
    await redis.pexpire(keys.requests(sid), 50_000)
    _, taken = await claims.load_and_claim(sid, "alice", None, (1,), claim())
    assert taken is not None and await redis.pttl(keys.requests(sid)) <= 50_000  # not due
    clock.now += 10
    _, taken = await claims.load_and_claim(sid, "alice", None, (1,), claim())
    assert taken is not None and await redis.pttl(keys.requests(sid)) > 100_000


async def test_an_unknown_session_is_not_remembered_as_renewed(redis: aioredis.Redis, keys: Keys) -> None:
    claims = Claims(redis, keys, ttl=100, max_requests=10, max_answer=100)
    sid = protocol.new_session_id()
    with pytest.raises(errors.SessionNotFound):
        await claims.load_and_claim(sid, "alice", None, (1,), claim())
    assert claims._renewals.due(sid, claims._renewals.clock())


async def test_a_batch_with_one_taken_id_claims_none_of_its_ids(redis: aioredis.Redis, keys: Keys) -> None:
    claims = Claims(redis, keys, ttl=60, max_requests=10, max_answer=100)
    sid = await session(redis, keys)
    _, taken = await claims.load_and_claim(sid, "alice", None, (2,), claim("h1"))  # one id: by HSETNX
    assert taken is None
    _, taken = await claims.load_and_claim(sid, "alice", None, (1, 2, 3), claim("h2", "BBBBBBBBBBBB"))
    assert taken == claim("h1")  # the replay of id 2's claim
    assert await claims.get(sid, 1) is None and await claims.get(sid, 3) is None  # nothing else claimed
    _, taken = await claims.load_and_claim(sid, "alice", None, (2,), claim("h3"))
    assert taken == claim("h1")  # the one-id path finds it too
    assert await redis.hget(keys.requests(sid), "#") == b"1"  # one claim made, one order entry


@pytest.mark.parametrize("batch", [False, True])
async def test_older_claims_go_a_tenth_of_the_bound_at_a_time(redis: aioredis.Redis, keys: Keys, batch: bool) -> None:
    """The newest `max_requests` claims are always kept; past them, a tenth of the bound goes at
    once, with its order entries, so the hash never holds more than 1.1 x the bound."""
    claims = Claims(redis, keys, ttl=60, max_requests=20, max_answer=100)
    sid = await session(redis, keys)
    sizes = []
    ids = list(range(67))
    steps = [tuple(ids[i : i + 3]) for i in range(0, 67, 3)] if batch else [(i,) for i in ids]
    for step in steps:
        _, taken = await claims.load_and_claim(sid, "alice", None, step, claim())
        assert taken is None
        sizes.append((await redis.hlen(keys.requests(sid)) - 1) // 2)  # claims (each with its order entry)
    kept = [i for i in ids if await claims.get(sid, i) is not None]
    assert kept[-20:] == ids[-20:]  # the newest 20 always
    assert kept == ids[len(ids) - len(kept) :]  # and only the newest: evicted in claim order
    assert 20 <= len(kept) <= 22 and max(sizes) <= 22
    order = {k for k in await redis.hkeys(keys.requests(sid)) if isinstance(k, bytes) and k.startswith(b"o:")}
    assert len(order) == len(kept)  # no order entry outlives its claim


async def test_a_renewal_by_a_load_renews_the_claims_too(redis: aioredis.Redis, keys: Keys) -> None:
    """Loads and claims share the renewal: when a load takes it (a GET between the POSTs), the
    claims hash is renewed with the record, or it would expire while the session lives."""
    clock = Clock()
    store = SessionStore(redis, keys, ttl=100, clock=clock)
    claims = Claims(redis, keys, ttl=100, max_requests=10, max_answer=100, renewals=store.renewals)
    sid = await session(redis, keys)
    await claims.load_and_claim(sid, "alice", None, (1,), claim())
    for key in (keys.session(sid), keys.requests(sid)):
        await redis.pexpire(key, 50_000)
    clock.now += 10
    await store.load(sid, "alice")  # due: the load renews
    for key in (keys.session(sid), keys.requests(sid)):
        assert 100_000 < await redis.pttl(key) <= 110_000


async def test_a_large_bound_evicts_in_batches_lua_can_unpack(redis: aioredis.Redis, keys: Keys) -> None:
    """Past a bound of 40,000 a tenth would be more values than Lua's `unpack` takes (~8,000): the
    batch stops at 1,000, and claims keep working."""
    from gateway.store import claims as claims_module

    limit = 45_000
    sid = await session(redis, keys)
    session_keys = list(keys.claim_keys(sid))
    sha = await redis.script_load(claims_module._LOAD_AND_CLAIM)
    for start in range(0, limit + 1_500, 1_500):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, start + 1_500):
                pipe.evalsha(sha, 3, *session_keys, "60000", "alice", "", claim().to_json(), str(limit), "0", f"r:{i}")
            replies = await pipe.execute()
        assert all(type(reply) is list for reply in replies)  # every one claimed, none an error
    held = (await redis.hlen(keys.requests(sid)) - 1) // 2
    assert limit <= held <= limit + 1_000
