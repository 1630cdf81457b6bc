"""Resumable streams in Redis: the event log, its metadata and the pump lease.

Writes go through small Lua scripts registered once, so each step is one round trip and
atomic: an append checks the writer still holds the lease (fencing a pump that lost it),
bumps the sequence number, XADDs the entry as `N-0` with an approximate MAXLEN, updates the
meta hash and renews every TTL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.wire import cursor

# Entry types: a message to deliver, or the end of the stream (never sent to clients).
MESSAGE = "m"
END = "e"
POLL = "p"  # the upstream closed the connection for the client to poll; data = its retry in ms

# KEYS: events, meta, lease.  ARGV: owner, maxlen, ttl_ms, lease_ms, pending, uid, marker ('1' end,
# 'p<ms>' poll, '0' none), then
# pairs of (data, upstream id) to append.  Returns the last seq, -1 lease lost, -2 meta vanished.
_APPEND = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq'))
for i = 8, #ARGV, 2 do
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', 'm', 'd', ARGV[i], 'u', ARGV[i+1])
end
if ARGV[7] == '1' then
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', 'e', 'd', '', 'u', '')
  redis.call('HSET', KEYS[2], 'done', '1')
  redis.call('DEL', KEYS[3])
else
  if string.sub(ARGV[7], 1, 1) == 'p' then
    seq = seq + 1
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', 'p', 'd', string.sub(ARGV[7], 2), 'u', '')
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call('HSET', KEYS[2], 'seq', seq, 'pending', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'uid', ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return seq
"""

# KEYS: events, meta, lease.  ARGV: owner, lease_ms.  1 when the caller now holds the lease.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
if redis.call('HGET', KEYS[2], 'done') == '1' then return 0 end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: lease.  ARGV: owner, lease_ms (0 = release).  1 when the caller held the lease.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


class LeaseLost(Exception):
    """Another replica pumps this stream now; stop writing."""


class StreamVanished(Exception):
    """The stream's metadata is gone (store flushed, failed over or expired)."""


@dataclass(frozen=True)
class Meta:
    kind: str
    seq: int
    pending: tuple[Any, ...]
    uid: str
    done: bool


@dataclass(frozen=True)
class Entry:
    seq: int
    type: str
    data: str
    uid: str


class EventLog:
    def __init__(self, redis: Redis, keys: Keys, *, maxlen: int, ttl: float, lease_ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._maxlen = str(maxlen)
        self._ttl_ms = str(int(ttl * 1000))
        self.lease_ms = int(lease_ttl * 1000)
        self._append = redis.register_script(_APPEND)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)

    async def create(self, session: str, stream: str, *, kind: str, pending: tuple[Any, ...], owner: str) -> None:
        """Create the meta record and take the lease for a brand-new stream."""
        _, meta, lease = self._keys.stream_keys(session, stream)
        mapping: dict[str | bytes, str | bytes] = {
            "kind": kind,
            "seq": "0",
            "pending": json.dumps(list(pending)),
            "uid": "",
            "done": "0",
        }
        with translated():
            # One round trip, not MULTI: older redis-py Cluster pipelines refuse transaction=True.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(meta, mapping=mapping)  # type: ignore[arg-type]
                pipe.pexpire(meta, int(self._ttl_ms))
                pipe.set(lease, owner, px=self.lease_ms)
                await pipe.execute()

    async def append(
        self,
        session: str,
        stream: str,
        owner: str,
        events: list[tuple[str, str]],
        *,
        pending: tuple[Any, ...],
        uid: str = "",
        final: bool = False,
        poll_ms: int | None = None,
    ) -> int:
        """Append (data, upstream id) pairs; `final` also writes the end marker and drops the lease,
        `poll_ms` a poll marker (the upstream closed the connection; clients may reconnect after it)."""
        args: list[str] = [
            owner,
            self._maxlen,
            self._ttl_ms,
            str(self.lease_ms),
            json.dumps(list(pending)),
            uid,
            "1" if final else (f"p{poll_ms}" if poll_ms is not None else "0"),
        ]
        for data, event_uid in events:
            args.extend((data, event_uid))
        with translated():
            result = int(await self._append(keys=list(self._keys.stream_keys(session, stream)), args=args))
        if result == -2:
            raise StreamVanished(f"stream {stream} metadata vanished")
        if result == -1:
            raise LeaseLost(f"lease on stream {stream} lost")
        return result

    async def acquire(self, session: str, stream: str, owner: str) -> bool:
        """Take over the pump lease of an unfinished stream whose lease expired."""
        with translated():
            result = int(
                await self._acquire(keys=list(self._keys.stream_keys(session, stream)), args=[owner, self.lease_ms])
            )
        if result == -2:
            raise StreamVanished(f"stream {stream} metadata vanished")
        return result == 1

    async def renew(self, session: str, stream: str, owner: str) -> bool:
        with translated():
            return bool(await self._renew(keys=[self._keys.lease(session, stream)], args=[owner, self.lease_ms]))

    async def release(self, session: str, stream: str, owner: str) -> None:
        with translated():
            await self._renew(keys=[self._keys.lease(session, stream)], args=[owner, 0])

    async def lease_holder(self, session: str, stream: str) -> str | None:
        with translated():
            raw: Any = await self._redis.get(self._keys.lease(session, stream))
        return raw.decode() if raw is not None else None

    async def meta(self, session: str, stream: str) -> Meta | None:
        with translated():
            raw: Any = await self._redis.hgetall(self._keys.meta(session, stream))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return Meta(
            kind=fields.get("kind", "post"),
            seq=int(fields.get("seq", "0")),
            pending=tuple(json.loads(fields.get("pending", "[]"))),
            uid=fields.get("uid", ""),
            done=fields.get("done") == "1",
        )

    async def first_seq(self, session: str, stream: str) -> int | None:
        with translated():
            rows: Any = await self._redis.xrange(self._keys.events(session, stream), count=1)
        return cursor.seq_of(rows[0][0]) if rows else None

    async def read(self, session: str, stream: str, after: int, count: int = 200) -> list[Entry]:
        """Entries with seq > after, oldest first, at most `count` (replay in batches)."""
        with translated():
            rows: Any = await self._redis.xrange(
                self._keys.events(session, stream), min=cursor.redis_id(after + 1), count=count
            )
        return [_entry(entry_id, fields) for entry_id, fields in rows]

    async def newest(self, session: str, stream: str, count: int) -> list[Entry]:
        """The newest `count` entries, oldest first (what a gap still lets us deliver)."""
        with translated():
            rows: Any = await self._redis.xrevrange(self._keys.events(session, stream), count=count)
        return [_entry(entry_id, fields) for entry_id, fields in reversed(rows)]

    async def wait(self, session: str, stream: str, after: int, timeout: float, count: int = 200) -> list[Entry]:
        """Block up to `timeout` seconds for entries with seq > after (XREAD BLOCK)."""
        key = self._keys.events(session, stream)
        with translated():
            result: Any = await self._redis.xread(
                {key: cursor.redis_id(after)}, count=count, block=max(1, int(timeout * 1000))
            )
        if not result:
            return []
        return [_entry(entry_id, fields) for entry_id, fields in result[0][1]]


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    return Entry(
        seq=cursor.seq_of(entry_id),
        type=fields.get(b"t", b"m").decode(),
        data=fields.get(b"d", b"").decode(),
        uid=fields.get(b"u", b"").decode(),
    )
