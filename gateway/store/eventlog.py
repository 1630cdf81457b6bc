"""Resumable streams in Redis: the event log, its metadata and the pump lease.

Writes go through small Lua scripts registered once, so each step is one round trip and
atomic, and each touches one session's keys only (one hash slot: legal on Redis Cluster).
An append checks the writer still holds the lease (fencing a pump that lost it) and that
the log is where the writer left it (a Redis failover that lost writes is a gap, never a
silent renumbering), bumps the sequence number, XADDs the entry as `N-0` with an
approximate MAXLEN, updates the meta hash, renews every TTL and SPUBLISHes the new seq on
the stream's shard channel, which wakes deliveries on other replicas (streams.tail).

A lease names the replica that pumps; it is not renewed per stream. Whether that replica
still lives is the liveness key's business (streams.liveness); a lease whose replica is gone
is taken over by compare-and-set against the holder the caller saw dead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys
from gateway.store.sessions import Registration
from gateway.wire import cursor

# Entry types: a message to deliver, or the end of the stream (never sent to clients).
MESSAGE = "m"
END = "e"
POLL = "p"  # the upstream closed the connection for the client to poll; data = its retry in ms
RELEASED = b"r"  # payload on the notify channel: the pump let go of the lease without finishing

# KEYS: events, meta, lease, notify channel[, the session's stream registry].  ARGV: owner, ttl_ms,
# kind, pending, traceparent ('' = not traced), maxlen, uid, final ('1'/'0'), notify ('1'/'0'),
# stream id, its registry entry, the registry's ttl_ms ('' x3 without a registry), the progress tokens
# of its requests ('' = not kept: a GET stream), retention_ms (an ended stream's TTL), then pairs of
# (data, upstream id): the stream's first events, if the upstream had sent some.  Returns the last seq.
_OPEN = """
local seq = 0
for i = 15, #ARGV, 2 do
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], seq .. '-0', 't', 'm', 'd', ARGV[i], 'u', ARGV[i+1])
end
local done = '0'
if ARGV[8] == '1' then
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], seq .. '-0', 't', 'e', 'd', '', 'u', '')
  done = '1'
else
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
end
redis.call('HSET', KEYS[2], 'kind', ARGV[3], 'seq', seq, 'pending', ARGV[4], 'uid', ARGV[7], 'done', done)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'tp', ARGV[5]) end
if ARGV[13] ~= '' then redis.call('HSET', KEYS[2], 'pt', ARGV[13]) end
local ttl = ARGV[2]
if done == '1' then ttl = ARGV[14] end  -- ended: kept only for the resumption window
redis.call('PEXPIRE', KEYS[2], ttl)
if seq > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if ARGV[9] == '1' then redis.call('SPUBLISH', KEYS[4], seq) end
end
if KEYS[5] then
  redis.call('HSET', KEYS[5], ARGV[10], ARGV[11])
  redis.call('PEXPIRE', KEYS[5], ARGV[12])
end
return seq
"""

# KEYS: events, meta, lease, notify channel.  ARGV: owner, maxlen, ttl_ms, pending, uid, marker ('1' end,
# 'p<ms>' poll, '0' none), expected seq ('' = unchecked), notify ('1'/'0'), retention_ms (an ended stream's
# TTL), then pairs of (data, upstream id).
# Returns the last seq; -1 lease lost, -2 meta vanished, -3 the log is not where the writer left it.
_APPEND = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -2 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq'))
if ARGV[7] ~= '' and seq ~= tonumber(ARGV[7]) then return -3 end
local ttl = ARGV[3]
for i = 10, #ARGV, 2 do
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', 'm', 'd', ARGV[i], 'u', ARGV[i+1])
end
if ARGV[6] == '1' then
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', 'e', 'd', '', 'u', '')
  redis.call('HSET', KEYS[2], 'done', '1')
  redis.call('DEL', KEYS[3])
  ttl = ARGV[9]  -- ended: kept only for the resumption window, not the session's TTL
else
  if string.sub(ARGV[6], 1, 1) == 'p' then
    seq = seq + 1
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', 'p', 'd', string.sub(ARGV[6], 2), 'u', '')
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('HSET', KEYS[2], 'seq', seq, 'pending', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'uid', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if ARGV[8] == '1' then redis.call('SPUBLISH', KEYS[4], seq) end
return seq
"""

# KEYS: events, meta, lease.  ARGV: owner, expected holder ('' = none), ttl_ms.
# Returns {1, owner} taken; {0, holder} someone else holds it; {2, ''} stream done; {-2, ''} meta vanished.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return {-2, ''} end
if redis.call('HGET', KEYS[2], 'done') == '1' then return {2, ''} end
local holder = redis.call('GET', KEYS[3])
if holder == false then holder = '' end
if holder ~= ARGV[2] then return {0, holder} end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
return {1, ARGV[1]}
"""

# KEYS: lease, notify channel.  ARGV: owner, notify ('1'/'0').  1 when the caller held the lease.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' then redis.call('SPUBLISH', KEYS[2], 'r') end
return 1
"""

TAKEN, HELD, DONE, VANISHED = 1, 0, 2, -2


class LeaseLost(Exception):
    """Another replica pumps this stream now; stop writing."""


class StreamVanished(Exception):
    """The stream's state is gone or rewound (store flushed, failed over, expired): a gap."""


@dataclass(frozen=True)
class Acquired:
    """The outcome of a takeover attempt: TAKEN, HELD (by `holder`), DONE or VANISHED."""

    code: int
    holder: str


@dataclass(frozen=True)
class Meta:
    kind: str
    seq: int
    pending: tuple[Any, ...]
    uid: str
    done: bool
    trace: str = ""  # the W3C traceparent of the request that opened the stream ("" if untraced)
    # The progress tokens of its requests; None when not recorded (a stream opened by an older replica).
    tokens: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Entry:
    seq: int
    type: str
    data: str
    uid: str


class EventLog:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        maxlen: int,
        ttl: float,
        retention: float | None = None,
        notify: bool = True,
    ) -> None:
        """`ttl`: a live stream's (the session's); `retention`: an ended stream's (default `ttl`),
        long enough for a client that lost the final event to resume, short enough that every
        finished call does not hold Redis memory for the session's life."""
        self._redis = redis
        self._keys = keys
        self._maxlen = str(maxlen)
        self._ttl_ms = str(int(ttl * 1000))
        self._retention_ms = str(int((ttl if retention is None else min(retention, ttl)) * 1000))
        self._notify = "1" if notify else "0"
        self._open = Script(redis, _OPEN)
        self._append = Script(redis, _APPEND)
        self._acquire = Script(redis, _ACQUIRE)
        self._release = Script(redis, _RELEASE)

    async def open(
        self,
        session: str,
        stream: str,
        *,
        kind: str,
        pending: tuple[Any, ...],
        owner: str,
        trace: str = "",
        registration: Registration | None = None,
        events: Sequence[tuple[str, str]] = (),
        uid: str = "",
        final: bool = False,
        tokens: tuple[Any, ...] | None = None,
    ) -> int:
        """Create the meta record and take the lease for a brand-new stream, with its first
        (data, upstream id) events if there are some (`pending`, `uid`, `final` as for `append`):
        the stream's setup and first append are one round trip. `trace` (a traceparent) is kept
        with it, so a takeover or a resume on any replica continues the same trace. With
        `registration`, the stream's entry in its session's registry is written too. `tokens`, the
        progress tokens of its requests, are kept with it for whoever re-opens it upstream (None:
        not kept). Returns the last seq (0 without events)."""
        keys = [*self._keys.stream_keys(session, stream), self._keys.notify(session, stream)]
        args: list[str | int] = [owner, self._ttl_ms, kind, json.dumps(list(pending)), trace, self._maxlen, uid]
        args += ["1" if final else "0", self._notify]
        if registration is not None:
            keys.append(self._keys.streams(session))
            args += [stream, registration.entry, registration.ttl_ms]
        else:
            args += ["", "", ""]
        args.append("" if tokens is None else json.dumps(list(tokens)))
        args.append(self._retention_ms)
        for data, event_uid in events:
            args.extend((data, event_uid))
        with translated():
            return int(await self._open(keys=keys, args=args))

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
        expect: int | None = None,
    ) -> int:
        """Append (data, upstream id) pairs; `final` also writes the end marker and drops the lease,
        `poll_ms` a poll marker (the upstream closed the connection; clients may reconnect after it).
        `expect` is the seq the writer last wrote: anything else means the store lost writes."""
        args: list[str] = [
            owner,
            self._maxlen,
            self._ttl_ms,
            json.dumps(list(pending)),
            uid,
            "1" if final else (f"p{poll_ms}" if poll_ms is not None else "0"),
            "" if expect is None else str(expect),
            self._notify,
            self._retention_ms,
        ]
        for data, event_uid in events:
            args.extend((data, event_uid))
        keys = [*self._keys.stream_keys(session, stream), self._keys.notify(session, stream)]
        with translated():
            result = int(await self._append(keys=keys, args=args))
        if result == -2:
            raise StreamVanished(f"stream {stream} metadata vanished")
        if result == -3:
            raise StreamVanished(f"stream {stream} is not where its pump left it (writes lost by the store)")
        if result == -1:
            raise LeaseLost(f"lease on stream {stream} lost")
        return result

    async def acquire(self, session: str, stream: str, owner: str, expected: str | None) -> Acquired:
        """Take the lease over from `expected` (a holder seen dead; None: nobody holds it)."""
        keys = list(self._keys.stream_keys(session, stream))
        with translated():
            code, holder = await self._acquire(keys=keys, args=[owner, expected or "", self._ttl_ms])
        return Acquired(int(code), holder.decode() if isinstance(holder, bytes) else str(holder))

    async def release(self, session: str, stream: str, owner: str) -> bool:
        """Let go of the lease without finishing (drain deadline, store hiccup) and say so on the channel."""
        keys = [self._keys.lease(session, stream), self._keys.notify(session, stream)]
        with translated():
            return bool(await self._release(keys=keys, args=[owner, self._notify]))

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
            trace=fields.get("tp", ""),
            # A GET stream has no requests, so no tokens; a POST stream's were not kept by older replicas.
            tokens=tuple(json.loads(fields["pt"])) if "pt" in fields else None if fields.get("kind") == "post" else (),
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


def appended(
    after: int, events: list[tuple[str, str]], *, final: bool = False, poll_ms: int | None = None
) -> list[Entry]:
    """The entries one `append` with `expect=after` wrote (what the script does, computed here: the
    writer's own deliveries get them without reading them back)."""
    entries = [Entry(after + i, MESSAGE, data, uid) for i, (data, uid) in enumerate(events, start=1)]
    if final:
        entries.append(Entry(after + len(entries) + 1, END, "", ""))
    elif poll_ms is not None:
        entries.append(Entry(after + len(entries) + 1, POLL, str(poll_ms), ""))
    return entries


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    return Entry(
        seq=cursor.seq_of(entry_id),
        type=fields.get(b"t", b"m").decode(),
        data=fields.get(b"d", b"").decode(),
        uid=fields.get(b"u", b"").decode(),
    )
