"""Gateway sessions in Redis: the map from a gateway session id to its upstream session.

Any replica can load any session. A load is one HGETALL, read from Redis every time (so a
DELETE or a re-initialization on one replica is seen by every other one at once). The sliding
idle TTL of the record, of the session's stream registry and of its replay claims is renewed in
the same round trip, but only when this replica last renewed it more than `REFRESH_FRACTION` of
the TTL ago (by a load or by a claim: `Renewals`); the renewal sets TTL x (1 + REFRESH_FRACTION),
so a session still lives at least the configured TTL after its last request (and at most 10 %
longer), and a claim at least the TTL after it was made.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gateway import errors
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.wire.protocol import valid_session_id


@dataclass(frozen=True)
class SessionRecord:
    id: str
    pool: str
    instance: str
    upstream_sid: str  # "" when the upstream did not issue one
    protocol: str
    principal: str = ""
    init_params: str = "{}"  # JSON of the client's initialize params, for re-establishment
    created: float = 0.0

    def to_redis(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items() if k != "id"}

    @classmethod
    def from_redis(cls, session_id: str, raw: dict[bytes, bytes]) -> SessionRecord:
        """The record of a session hash (HGETALL's fields and values)."""
        return cls.from_values(session_id, [raw.get(name) for name in RECORD_FIELDS])

    @classmethod
    def from_values(cls, session_id: str, values: Sequence[bytes | None]) -> SessionRecord:
        """The record from its hash's values in `RECORD_FIELDS` order (HMGET's reply: None for
        a field the hash lacks). Built as the dataclass's `__init__` would build it, but into its
        `__dict__` at once: a frozen dataclass sets each field through `object.__setattr__`, a
        cost paid on every request of a session (docs/decisions/0010)."""
        pool, instance, upstream_sid, protocol, principal, init_params, created = values
        if pool is None or instance is None or protocol is None:
            raise KeyError("a session hash without its pool, instance or protocol")
        record = object.__new__(cls)
        record.__dict__.update(
            id=session_id,
            pool=pool.decode(),
            instance=instance.decode(),
            upstream_sid=upstream_sid.decode() if upstream_sid is not None else "",
            protocol=protocol.decode(),
            principal=principal.decode() if principal is not None else "",
            init_params=init_params.decode() if init_params is not None else "{}",
            created=float(created) if created is not None else 0.0,
        )
        return record


# The session hash's fields, in the order `from_values` takes them (and the claim script's HMGET
# asks for them: store/claims.py).
RECORD_FIELDS = (b"pool", b"instance", b"upstream_sid", b"protocol", b"principal", b"init_params", b"created")


@dataclass(frozen=True)
class StreamInfo:
    """What the session's registry remembers about one of its streams."""

    kind: str
    pending: tuple[Any, ...]


@dataclass(frozen=True)
class Registration:
    """A stream's entry in its session's registry (the `streams` hash) and the registry's TTL."""

    entry: str
    ttl_ms: int


REFRESH_FRACTION = 0.1  # renew a session's TTL when this replica renewed it more than 10 % of it ago
_MAX_TRACKED = 100_000  # renewal times kept per replica before stale ones are dropped


class Renewals:
    """When this replica last renewed each session's TTL: a renewal is due once more than
    `REFRESH_FRACTION` of the TTL passed since. One per replica, shared by the session loads and
    the claims (`store/claims.py`), so either path renews a session at most once per period."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_ms = int(ttl * (1 + REFRESH_FRACTION) * 1000)  # what a renewal sets
        self._every = ttl * REFRESH_FRACTION
        self.clock = clock
        self._renewed: dict[str, float] = {}  # session id -> when this replica last renewed its TTL

    def due(self, session_id: str, now: float) -> bool:
        return now - self._renewed.get(session_id, -self._every) >= self._every

    def done(self, session_id: str, now: float) -> None:
        if len(self._renewed) >= _MAX_TRACKED:
            cutoff = now - self._every
            self._renewed = {sid: t for sid, t in self._renewed.items() if t > cutoff}
            if len(self._renewed) >= _MAX_TRACKED // 2:
                self._renewed.clear()  # forgetting only costs an early renewal
        self._renewed[session_id] = now

    def forget(self, session_id: str) -> None:
        self._renewed.pop(session_id, None)


class SessionStore:
    def __init__(self, redis: Redis, keys: Keys, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = int(ttl * 1000)
        self.renewals = Renewals(ttl, clock)

    async def create(self, record: SessionRecord) -> None:
        key = self._keys.session(record.id)
        with translated():
            # One round trip, not MULTI: older redis-py Cluster pipelines refuse transaction=True.
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=record.to_redis())  # type: ignore[arg-type]
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

    async def load(self, session_id: str, principal: str = "") -> SessionRecord:
        """Load and touch a session; unknown, malformed or foreign ids are all a 404."""
        # transports §Session Management: unknown/terminated session -> 404, client re-initializes.
        if not valid_session_id(session_id):
            raise errors.SessionNotFound("Session not found")
        key = self._keys.session(session_id)
        now = self.renewals.clock()
        with translated():
            if not self.renewals.due(session_id, now):
                raw: dict[bytes, bytes] = await self._redis.hgetall(key)  # type: ignore[assignment]
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hgetall(key)
                    # The record, the stream registry and the replay claims: the keys the claim
                    # script renews (`store/claims.py`). Every renewal, by either path, renews all
                    # three, so a claim is remembered at least a TTL after it was made.
                    for renewed in self._keys.claim_keys(session_id):
                        pipe.pexpire(renewed, self.renewals.ttl_ms)
                    raw = (await pipe.execute())[0]
                if raw:
                    self.renewals.done(session_id, now)
        if not raw:
            raise errors.SessionNotFound("Session not found")
        record = SessionRecord.from_redis(session_id, raw)
        # A session is bound to the principal that created it; a mismatch looks like "unknown".
        if not hmac.compare_digest(record.principal.encode(), principal.encode()):
            raise errors.SessionNotFound("Session not found")
        return record

    async def update_upstream(self, session_id: str, instance: str, upstream_sid: str) -> None:
        with translated():
            await self._redis.hset(
                self._keys.session(session_id),
                mapping={"instance": instance, "upstream_sid": upstream_sid},
            )

    def registration(self, kind: str, pending: tuple[Any, ...]) -> Registration:
        """A new stream's entry in its session's registry (`stream_info` reads it); the event log
        writes it with the stream's meta and lease (`EventLog.create`), in one round trip."""
        # The registry lives as long as the record may (see load).
        return Registration(json.dumps({"kind": kind, "pending": list(pending)}), self.renewals.ttl_ms)

    async def stream_info(self, session_id: str, stream: str) -> StreamInfo | None:
        with translated():
            raw = await self._redis.hget(self._keys.streams(session_id), stream)
        if raw is None:
            return None
        data = json.loads(raw)
        return StreamInfo(kind=str(data["kind"]), pending=tuple(data["pending"]))

    async def delete(self, session_id: str) -> int:
        """Remove the session and every stream it owns; returns the number of streams."""
        self.renewals.forget(session_id)
        streams_key = self._keys.streams(session_id)
        with translated():
            stream_ids: list[bytes] = await self._redis.hkeys(streams_key)  # type: ignore[assignment]
            keys = [self._keys.session(session_id), streams_key, self._keys.requests(session_id)]
            for raw in stream_ids:
                keys.extend(self._keys.stream_keys(session_id, raw.decode()))
            await self._redis.delete(*keys)
        return len(stream_ids)


def new_record(
    session_id: str,
    *,
    pool: str,
    instance: str,
    upstream_sid: str,
    protocol: str,
    principal: str,
    init_params: Any,
) -> SessionRecord:
    return SessionRecord(
        id=session_id,
        pool=pool,
        instance=instance,
        upstream_sid=upstream_sid,
        protocol=protocol,
        principal=principal,
        init_params=json.dumps(init_params if init_params is not None else {}),
        created=time.time(),
    )
