"""Idempotency-Key records (draft-ietf-httpapi-idempotency-key-header): one per (principal, key).

The first request with a key creates its record set-if-absent (state `running`, the request's
fingerprint) with the configured validity as TTL; its outcome is stored when known: `done` with
the response (status, content type, body: JSON or the SSE bytes as sent, bounded), or `done`
naming a sessionful stream, or `interrupted` (the client cancelled a stateless stream midway).
A key whose request provably never reached the upstream is forgotten so it may be retried.
Each record is one key in its own hash slot (the tag is a digest of principal and key).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys

RUNNING = "running"
DONE = "done"
INTERRUPTED = "interrupted"
DROPPED = "dropped"  # done, but the response was larger than the bound: not kept

# KEYS: record.  ARGV: fingerprint, ttl_ms.  {} when created, else the existing record's fields.
_BEGIN = """
local existing = redis.call('HGETALL', KEYS[1])
if #existing > 0 then return existing end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'running')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {}
"""

# KEYS: record.  ARGV: field, value pairs.  Only an existing record is updated (it keeps its TTL).
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


@dataclass(frozen=True)
class IdempotencyRecord:
    fingerprint: str
    state: str
    status: int = 0
    content_type: str = ""
    body: bytes = b""
    session: str = ""  # sessionful streamed answers: the session and stream that carry them
    stream: str = ""


@dataclass(frozen=True)
class Outcome:
    """What `finish` stores: a response (status, content type, body), a sessionful stream's name,
    or only a state (`interrupted`, `dropped`)."""

    state: str = DONE
    status: int = 0
    content_type: str = ""
    body: bytes = b""
    session: str = ""
    stream: str = ""


def record_digest(principal: str, key: str) -> str:
    """Keys are scoped to their principal (draft §2.2: unique per client); the digest hides both."""
    return hashlib.sha256(f"{len(principal)}:{principal}{key}".encode()).hexdigest()[:32]


class IdempotencyStore:
    def __init__(self, redis: Redis, keys: Keys, *, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = int(ttl * 1000)
        self._begin = Script(redis, _BEGIN)
        self._finish = Script(redis, _FINISH)

    async def begin(self, digest: str, fingerprint: str) -> IdempotencyRecord | None:
        """Create the record (None: this request runs) or return the one already there."""
        with translated():
            flat = await self._begin(keys=[self._keys.idempotency(digest)], args=[fingerprint, self._ttl_ms])
        if not flat:
            return None
        fields = {k.decode(): v for k, v in zip(flat[::2], flat[1::2], strict=True)}
        return IdempotencyRecord(
            fingerprint=fields.get("fingerprint", b"").decode(),
            state=fields.get("state", b"running").decode(),
            status=int(fields.get("status", b"0")),
            content_type=fields.get("content_type", b"").decode(),
            body=fields.get("body", b""),
            session=fields.get("session", b"").decode(),
            stream=fields.get("stream", b"").decode(),
        )

    async def finish(self, digest: str, outcome: Outcome) -> None:
        """Store the outcome; the record keeps the TTL it got when the first request came."""
        o = outcome
        args: list[str | bytes | int] = [
            *("state", o.state, "status", o.status, "content_type", o.content_type),
            *("body", o.body, "session", o.session, "stream", o.stream),
        ]
        with translated():
            await self._finish(keys=[self._keys.idempotency(digest)], args=args)

    async def forget(self, digest: str) -> None:
        with translated():
            await self._redis.delete(self._keys.idempotency(digest))
