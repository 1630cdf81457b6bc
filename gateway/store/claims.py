"""Request-id claims: a replayed request (same session, same JSON-RPC id) is never run twice.

MCP basic §Requests forbids reusing a request id within a session, so a second POST with an id
the session already used is a replay (a load balancer retrying after a broken connection, a
client retrying a timeout). The first copy claims its id set-if-absent in the session's hash
slot, in the same round trip that loads the session (`load_and_claim`); its outcome (the stream
id, known before the upstream is called, or a bounded JSON answer) is recorded in the claim so
a repeat on any replica can be answered without reaching the upstream again.

Memory is bounded per session: the newest `max_requests` claims are always kept; older ones
are evicted in claim order, a tenth of the bound (at most 1,000) at a time: one HMGET and one
HDEL per batch, not three commands per claim, so a session holds at most 1.1 x `max_requests`
(+ 1,000 past 10,000). A JSON answer is kept only up to `max_answer` bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _string  # json.dumps' own string encoder

from gateway import errors
from gateway.errors import JsonRpcId
from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys
from gateway.store.sessions import Renewals, SessionRecord
from gateway.wire.protocol import valid_session_id

# KEYS: session, streams, reqs.  ARGV: ttl_ms, principal, pool ('' = any), claim JSON, max claims,
# renew ('1': the sliding TTLs are due for renewal, `sessions.Renewals`), then the claim fields.
# Returns 0 for an unknown session, the record when the ids were claimed, {2, record, claim} when
# one was taken; the record is the session hash's values in `sessions.RECORD_FIELDS` order (false:
# not set), returned as it is (no table around it: Redis converts one array less). The claims hash
# gets its TTL when it is renewed or made: it lives at least as long as the session. One id (the
# usual request) is claimed by HSETNX, which also tells whether it was taken.
_LOAD_AND_CLAIM = """
local rec = redis.call('HMGET', KEYS[1], 'pool', 'instance', 'upstream_sid', 'protocol', 'principal',
                       'init_params', 'created')
if not rec[1] then return 0 end
if (rec[5] or '') ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and rec[1] ~= ARGV[3] then return 0 end
local renew = ARGV[6] == '1'
if renew then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
if #ARGV == 7 then
  if redis.call('HSETNX', KEYS[3], ARGV[7], ARGV[4]) == 0 then
    if renew then redis.call('PEXPIRE', KEYS[3], ARGV[1]) end
    return {2, rec, redis.call('HGET', KEYS[3], ARGV[7])}
  end
else
  for i = 7, #ARGV do
    local taken = redis.call('HGET', KEYS[3], ARGV[i])
    if taken then
      if renew then redis.call('PEXPIRE', KEYS[3], ARGV[1]) end
      return {2, rec, taken}
    end
  end
  for i = 7, #ARGV do redis.call('HSET', KEYS[3], ARGV[i], ARGV[4]) end
end
local limit = tonumber(ARGV[5])
local batch = math.min(math.max(1, math.floor(limit / 10)), 1000)  -- unpack takes a few thousand at most
for i = 7, #ARGV do
  local n = redis.call('HINCRBY', KEYS[3], '#', 1)
  if n == 1 then renew = true end
  redis.call('HSET', KEYS[3], 'o:' .. n, ARGV[i])
  if n > limit and (n - limit) % batch == 0 then
    local order = {}
    for k = n - limit - batch + 1, n - limit do order[#order + 1] = 'o:' .. k end
    local gone = redis.call('HMGET', KEYS[3], unpack(order))
    for j = 1, #order do
      if gone[j] then order[#order + 1] = gone[j] end
    end
    redis.call('HDEL', KEYS[3], unpack(order))
  end
end
if renew then redis.call('PEXPIRE', KEYS[3], ARGV[1]) end
return rec
"""

# KEYS: reqs.  ARGV: claim JSON, then fields.  Rewrites the fields that still exist (not evicted).
_UPDATE = """
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
end
return 1
"""


@dataclass
class Claim:
    """What the session remembers about one request id (one batch shares one claim).

    Treated as immutable (`answered` and `dataclasses.replace` make new ones), but not frozen:
    a frozen dataclass sets each field through `object.__setattr__`, 4x the cost of building
    one, and two are built per JSON call."""

    body_hash: str
    stream: str  # the stream id reserved for an SSE answer (it exists once the upstream answered)
    replica: str
    at: float  # when the first copy claimed it (wall clock, comparable across replicas)
    status: int = 0  # 0 = no JSON answer recorded (yet)
    answer: str | None = None  # the recorded JSON answer
    dropped: bool = False  # the answer was larger than the bound: not kept
    _json = ""  # not a field: the text of `to_json`, once written

    def answered(self, status: int, answer: str) -> Claim:
        """This claim with its JSON answer (what `dataclasses.replace` gives, at a fifth of its
        cost). Its JSON is this one's with the two fields added (they come last)."""
        claim = Claim(self.body_hash, self.stream, self.replica, self.at, status, answer)
        if status and not self.status and self.answer is None and not self.dropped:
            claim._json = f'{self.to_json()[:-1]},"status":{int(status)},"answer":{_string(answer)}}}'
        return claim

    def to_json(self) -> str:
        """What `json.dumps` of the non-default fields gives, written out (a third of its cost)."""
        if not self._json:
            self._json = self._write_json()
        return self._json

    def _write_json(self) -> str:
        parts = [f'{{"body_hash":{_string(self.body_hash)}']
        if self.stream:
            parts.append(f'"stream":{_string(self.stream)}')
        if self.replica:
            parts.append(f'"replica":{_string(self.replica)}')
        if self.at:
            parts.append(f'"at":{float(self.at)!r}')
        if self.status:
            parts.append(f'"status":{int(self.status)}')
        if self.answer is not None:
            parts.append(f'"answer":{_string(self.answer)}')
        if self.dropped:
            parts.append('"dropped":true')
        return ",".join(parts) + "}"

    @classmethod
    def from_json(cls, raw: bytes | str) -> Claim:
        data = json.loads(raw)
        return cls(
            body_hash=str(data["body_hash"]),
            stream=str(data.get("stream", "")),
            replica=str(data.get("replica", "")),
            at=float(data.get("at", 0.0)),
            status=int(data.get("status", 0)),
            answer=data.get("answer"),
            dropped=bool(data.get("dropped", False)),
        )


def claim_field(request_id: JsonRpcId) -> str:
    """`1` and `"1"` are different JSON-RPC ids: the field holds the id's JSON."""
    if isinstance(request_id, str):
        return "r:" + _string(request_id)
    if type(request_id) is int:  # not a bool: json.dumps(True) is "true"
        return "r:" + str(request_id)
    return "r:" + json.dumps(request_id)


class Claims:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        ttl: float,
        max_requests: int,
        max_answer: int,
        renewals: Renewals | None = None,
    ) -> None:
        """`renewals`: the replica's (`SessionStore.renewals`), so that loads and claims renew a
        session's TTLs at most once per period between them; by default, one of its own."""
        self._redis = redis
        self._keys = keys
        self._renewals = renewals if renewals is not None else Renewals(ttl)
        self._ttl_ms = str(self._renewals.ttl_ms)
        self._max_requests = str(max_requests)
        self.max_answer = max_answer
        self._load_and_claim = Script(redis, _LOAD_AND_CLAIM)
        self._update = Script(redis, _UPDATE)

    def _session_keys(self, session_id: str) -> list[str]:
        return list(self._keys.claim_keys(session_id))

    async def load_and_claim(
        self, session_id: str, principal: str, pool: str | None, ids: tuple[JsonRpcId, ...], claim: Claim
    ) -> tuple[SessionRecord, Claim | None]:
        """Load the session and claim `ids` in one round trip, renewing the session's sliding
        TTLs when this replica's renewal is due (not on every request).

        Returns the record and None when this copy claimed the ids (it runs the request), or the
        existing claim when one of them was claimed before (this copy is a replay).
        """
        # transports §Session Management: unknown/terminated session -> 404, client re-initializes.
        if not valid_session_id(session_id):
            raise errors.SessionNotFound("Session not found")
        renewals = self._renewals
        now = renewals.clock()
        renew = renewals.due(session_id, now)
        args = [self._ttl_ms, principal, pool or "", claim.to_json(), self._max_requests, "1" if renew else "0"]
        with translated():
            reply = await self._load_and_claim(
                keys=self._session_keys(session_id), args=[*args, *(claim_field(i) for i in ids)]
            )
        if type(reply) is not list:
            # Unknown, or bound to another principal or pool: all look like "unknown" (no claim made).
            raise errors.SessionNotFound("Session not found")
        if renew:
            renewals.done(session_id, now)
        if type(reply[0]) is int:  # {2, record, claim}: taken (a record's first value is its pool)
            return SessionRecord.from_values(session_id, reply[1]), Claim.from_json(reply[2])
        return SessionRecord.from_values(session_id, reply), None

    async def get(self, session_id: str, request_id: JsonRpcId) -> Claim | None:
        with translated():
            raw = await self._redis.hget(self._keys.requests(session_id), claim_field(request_id))
        return Claim.from_json(raw) if raw is not None else None

    async def record(self, session_id: str, ids: tuple[JsonRpcId, ...], claim: Claim) -> None:
        """Store the claim's outcome on every id that is still claimed."""
        with translated():
            await self._update(keys=[self._keys.requests(session_id)], args=_update_args(ids, claim))

    def record_nowait(self, session_id: str, ids: tuple[JsonRpcId, ...], claim: Claim) -> bool:
        """`record` on the lane, not waited for; False when the lane could not take it (nothing
        was written: call `record`). Lost only if Redis refuses it or dies first: a repeat then
        waits for the claim as for a first copy that died (replay.replays)."""
        return self._update.cast(keys=[self._keys.requests(session_id)], args=_update_args(ids, claim))

    async def release(self, session_id: str, ids: tuple[JsonRpcId, ...]) -> None:
        """Forget a claim whose request provably never reached the upstream (it may be retried)."""
        with translated():
            await self._redis.hdel(self._keys.requests(session_id), *(claim_field(i) for i in ids))


def _update_args(ids: tuple[JsonRpcId, ...], claim: Claim) -> list[str]:
    """ARGV of `_UPDATE`: the claim's JSON, then the field of every id it stands for."""
    return [claim.to_json(), *(claim_field(i) for i in ids)]
