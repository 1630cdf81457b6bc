"""A virtual session in Redis: the gateway's usual session hash, plus one field per member.

The hash keeps the single-pool fields (`pool` = the virtual server's name, `instance` and
`upstream_sid` empty), so `mcp-gateway inspect`, the TTL renewal and DELETE treat it as any other
session; `member:<pool>` holds that member's upstream session (instance, id, version, state).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from dataclasses import dataclass

from gateway import errors
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.store.sessions import SessionRecord, SessionStore
from gateway.virtual.naming import VirtualServer
from gateway.wire.protocol import valid_session_id

MEMBER = "member:"
UP, DOWN = "up", "down"


@dataclass(frozen=True)
class Member:
    """One member's upstream session: `state` is DOWN when it could not be opened (retried lazily)."""

    pool: str
    instance: str = ""
    sid: str = ""
    protocol: str = ""
    state: str = DOWN
    opened: float = 0.0  # wall-clock time its upstream session was opened (0: never)

    def to_field(self) -> str:
        fields = {"instance": self.instance, "sid": self.sid, "protocol": self.protocol, "state": self.state}
        return json.dumps({**fields, "opened": self.opened})

    @classmethod
    def from_field(cls, pool: str, raw: bytes | str) -> Member:
        data = json.loads(raw)
        fields = (str(data["instance"]), str(data["sid"]), str(data["protocol"]), str(data["state"]))
        return cls(pool, *fields, float(data.get("opened", 0.0)))

    def session(self, record: SessionRecord) -> SessionRecord:
        """The member as a single-pool session record: what the relay's pumps resume with."""
        return dataclasses.replace(
            record, pool=self.pool, instance=self.instance, upstream_sid=self.sid, protocol=self.protocol
        )


@dataclass(frozen=True)
class VirtualSession:
    record: SessionRecord
    members: dict[str, Member]


class VirtualSessions:
    def __init__(self, redis: Redis, keys: Keys, sessions: SessionStore) -> None:
        self._redis = redis
        self._keys = keys
        self._sessions = sessions

    async def create(self, record: SessionRecord, members: list[Member]) -> None:
        await self._sessions.create(record)
        with translated():
            await self._redis.hset(
                self._keys.session(record.id), mapping={MEMBER + m.pool: m.to_field() for m in members}
            )

    async def load(self, session_id: str, principal: str, server: VirtualServer) -> VirtualSession:
        """Load the session, its members in configuration order (one the record lacks is DOWN:
        opened lazily); unknown, foreign, or of another server or a plain pool: 404. One HGETALL;
        when this replica's renewal of the session's TTLs is due, the store's own load does it first."""
        # transports §Session Management: unknown/terminated session -> 404, client re-initializes.
        if not valid_session_id(session_id):
            raise errors.SessionNotFound("Session not found")
        renewals = self._sessions.renewals
        if renewals.due(session_id, renewals.clock()):
            await self._sessions.load(session_id, principal)
        with translated():
            raw: dict[bytes, bytes] = await self._redis.hgetall(self._keys.session(session_id))  # type: ignore[assignment]
        if not raw:
            raise errors.SessionNotFound("Session not found")
        record = SessionRecord.from_redis(session_id, raw)
        # A session is bound to the principal that created it; a mismatch looks like "unknown".
        if record.pool != server.name or not hmac.compare_digest(record.principal.encode(), principal.encode()):
            raise errors.SessionNotFound("Session not found")
        members: dict[str, Member] = {}
        for pool in server.members:
            value = raw.get((MEMBER + pool).encode())
            members[pool] = Member.from_field(pool, value) if value is not None else Member(pool)
        return VirtualSession(record, members)

    async def member(self, session_id: str, pool: str) -> Member | None:
        """The member's entry as stored now (another replica may have re-established it)."""
        with translated():
            raw = await self._redis.hget(self._keys.session(session_id), MEMBER + pool)
        return Member.from_field(pool, raw) if raw is not None else None

    async def set_member(self, session_id: str, member: Member) -> None:
        with translated():
            await self._redis.hset(self._keys.session(session_id), MEMBER + member.pool, member.to_field())

    def lock_key(self, session_id: str, pool: str) -> str:
        """Held while one replica re-establishes a member (the session's hash tag: same slot)."""
        return f"{self._keys.reinit_lock(session_id)}:{pool}"


def members_of(raw: dict[bytes, bytes]) -> list[Member]:
    """The member entries of a session hash (HGETALL's reply), by pool name; none for a plain session."""
    found = [(name.decode(), value) for name, value in raw.items() if name.startswith(MEMBER.encode())]
    return [Member.from_field(name[len(MEMBER) :], value) for name, value in sorted(found)]
