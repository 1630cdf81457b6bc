"""`mcp-gateway inspect`: what the store holds, read-only, for operators.

Why its own module: an operator should not read Redis keys by hand to learn which replicas are
alive, which sessions and streams exist and who pumps what. Everything here reads: SCAN (never
KEYS) in bounded batches, then small pipelines of HGETALL/GET/PTTL per session, so a large
store is walked without blocking Redis. Each pipeline touches one session's keys (one slot).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.config import Settings
from gateway.errors import SessionNotFound
from gateway.store.client import Redis, connect, translated
from gateway.store.keys import Keys
from gateway.tasks.record import TaskRecord
from gateway.virtual.record import Member, members_of

SCAN_COUNT = 500  # keys a SCAN step looks at: Redis does bounded work per call


@dataclass(frozen=True)
class Replica:
    id: str
    ttl_ms: int


@dataclass(frozen=True)
class Stream:
    session: str  # id prefix
    id: str
    kind: str
    pending: list[Any]
    last_seq: int
    done: bool
    events: int  # entries retained
    owner: str | None  # replica id holding the pump lease
    owner_alive: bool | None  # None: no lease
    lease_ttl_ms: int | None
    lease_idle_s: int | None  # since the lease key was last touched (the pump's last append or renewal)


@dataclass(frozen=True)
class Session:
    id: str
    pool: str
    instance: str
    protocol: str
    principal: str
    age_s: float
    ttl_ms: int
    upstream_sid: bool
    streams: list[Stream] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)  # a virtual server's (`gateway/virtual/`)


@dataclass(frozen=True)
class Task:
    id: str
    served_by: str  # "gateway" (gateway-served task) or "upstream" (pass-through: its route)
    status: str  # "" for a pass-through task: only its upstream knows
    pool: str
    tool: str
    principal: str
    runner: str  # replica running a gateway-served task, or the upstream instance of a routed one
    runner_alive: bool | None  # None: not a replica (pass-through) or a terminal task
    age_s: float | None
    ttl_ms: int
    message: str = ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Inspector:
    def __init__(self, redis: Redis, keys: Keys, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock

    async def _scan(self, pattern: str, type_: str) -> list[str]:
        with translated():
            return [_text(k) async for k in self._redis.scan_iter(match=pattern, count=SCAN_COUNT, _type=type_)]

    async def replicas(self) -> list[Replica]:
        found = await self._scan(self._keys.replica_pattern(), "string")
        if not found:
            return []
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in found:
                    pipe.pttl(key)
                ttls = await pipe.execute()
        return sorted(
            (Replica(self._keys.replica_of(k), int(t)) for k, t in zip(found, ttls, strict=True) if t != -2),
            key=lambda r: r.id,
        )

    async def sessions(self, *, streams: bool = True) -> list[Session]:
        ids = [self._keys.session_of(k) for k in await self._scan(self._keys.session_pattern(), "hash")]
        alive = {r.id for r in await self.replicas()} if streams else set()
        found = [s for sid in ids if (s := await self._session(sid, alive, streams)) is not None]
        return sorted(found, key=lambda s: s.age_s)

    async def session(self, id_or_prefix: str) -> Session:
        """One session by its id or a unique prefix of it (what the logs show: 8 characters)."""
        ids = [self._keys.session_of(k) for k in await self._scan(self._keys.session_pattern(id_or_prefix), "hash")]
        if len(ids) != 1:
            raise SessionNotFound(
                f"no session {id_or_prefix!r}" if not ids else f"{len(ids)} sessions start with {id_or_prefix!r}"
            )
        alive = {r.id for r in await self.replicas()}
        found = await self._session(ids[0], alive, True)
        if found is None:
            raise SessionNotFound(f"session {id_or_prefix!r} expired meanwhile")
        return found

    async def _session(self, sid: str, alive: set[str], with_streams: bool) -> Session | None:
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(self._keys.session(sid))
                pipe.pttl(self._keys.session(sid))
                pipe.hgetall(self._keys.streams(sid))
                raw, ttl, registry = await pipe.execute()
        if not raw:
            return None
        record = {_text(k): _text(v) for k, v in raw.items()}
        stream_ids = sorted(_text(s) for s in registry) if with_streams else []
        return Session(
            id=sid,
            pool=record.get("pool", ""),
            instance=record.get("instance", ""),
            protocol=record.get("protocol", ""),
            principal=record.get("principal", ""),
            age_s=round(self._clock() - float(record.get("created", "0") or 0), 1),
            ttl_ms=int(ttl),
            upstream_sid=bool(record.get("upstream_sid")),
            streams=[await self._stream(sid, s, alive) for s in stream_ids],
            members=members_of(raw),
        )

    async def _stream(self, sid: str, stream: str, alive: set[str]) -> Stream:
        events, meta, lease = self._keys.stream_keys(sid, stream)
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(meta)
                pipe.xlen(events)
                pipe.get(lease)
                pipe.pttl(lease)
                pipe.object("idletime", lease)
                raw, length, owner, lease_ttl, idle = await pipe.execute(raise_on_error=False)
        fields = {_text(k): _text(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        holder = _text(owner) if owner is not None else None
        return Stream(
            session=sid[:8],
            id=stream,
            kind=fields.get("kind", "?"),
            pending=json.loads(fields.get("pending", "[]")),
            last_seq=int(fields.get("seq", "0")),
            done=fields.get("done") == "1",
            events=int(length) if isinstance(length, int) else 0,
            owner=holder,
            owner_alive=None if holder is None else holder in alive,
            lease_ttl_ms=int(lease_ttl) if holder is not None else None,
            lease_idle_s=int(idle) if holder is not None and isinstance(idle, int) else None,
        )

    async def tasks(self) -> list[Task]:
        """Gateway-served tasks (status, runner and whether it is alive) and pass-through routes."""
        alive = {r.id for r in await self.replicas()}
        found: list[Task] = []
        for kind in ("task", "route"):
            for key in await self._scan(self._keys.task_pattern(kind), "hash"):
                with translated():
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.hgetall(key)
                        pipe.pttl(key)
                        raw, ttl = await pipe.execute()
                if raw:
                    found.append(self._task(self._keys.task_of(key), kind, raw, int(ttl), alive))
        return sorted(found, key=lambda t: (t.age_s is None, t.age_s or 0.0))

    def _task(self, task_id: str, kind: str, raw: dict[bytes, bytes], ttl: int, alive: set[str]) -> Task:
        if kind == "route":
            f = {_text(k): _text(v) for k, v in raw.items()}
            return Task(
                task_id,
                "upstream",
                "",
                f.get("pool", ""),
                "",
                f.get("principal", ""),
                f.get("instance", ""),
                None,
                None,
                ttl,
            )
        record = TaskRecord.from_redis(task_id, raw)
        age = round(self._clock() - record.created / 1000, 1)
        runner_alive = None if record.terminal else record.owner in alive
        return Task(
            task_id,
            "gateway",
            record.status,
            record.pool,
            record.tool,
            record.principal,
            record.owner,
            runner_alive,
            age,
            ttl,
            record.message,
        )


# ---------------------------------------------------------------- rendering


def as_json_text(value: Any) -> str:
    def plain(item: Any) -> Any:
        return asdict(item) if hasattr(item, "__dataclass_fields__") else item

    data = [plain(v) for v in value] if isinstance(value, list) else plain(value)
    return json.dumps(data, indent=2, sort_keys=True)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def replicas_text(replicas: list[Replica]) -> str:
    rows = [[r.id, f"{r.ttl_ms} ms"] for r in replicas]
    return f"replicas alive: {len(replicas)}\n" + _table(["REPLICA", "TTL"], rows)


def sessions_text(sessions: list[Session]) -> str:
    rows = [
        [s.id[:8], s.pool, s.instance, s.protocol, f"{s.age_s:g} s", s.principal or "-", str(len(s.streams))]
        for s in sessions
    ]
    headers = ["SESSION", "POOL", "INSTANCE", "PROTOCOL", "AGE", "PRINCIPAL", "STREAMS"]
    return f"sessions: {len(sessions)}\n" + _table(headers, rows)


def streams_text(streams: list[Stream]) -> str:
    def owner(s: Stream) -> str:
        if s.owner is None:
            return "-"
        return f"{s.owner} ({'alive' if s.owner_alive else 'NOT ALIVE'})"

    def lease(s: Stream) -> str:
        if s.owner is None:
            return "-"
        idle = f"idle {s.lease_idle_s} s" if s.lease_idle_s is not None else "idle ?"
        return f"{idle}, ttl {s.lease_ttl_ms} ms" if s.lease_ttl_ms not in (None, -1) else idle

    rows = [
        [s.session, s.id, s.kind, json.dumps(s.pending), str(s.last_seq), "yes" if s.done else "no", owner(s), lease(s)]
        for s in streams
    ]
    headers = ["SESSION", "STREAM", "KIND", "PENDING", "LAST SEQ", "DONE", "PUMP OWNER", "LEASE"]
    return f"streams: {len(streams)}\n" + _table(headers, rows)


def tasks_text(tasks: list[Task]) -> str:
    def runner(t: Task) -> str:
        if t.runner_alive is None:
            return t.runner or "-"
        return f"{t.runner} ({'alive' if t.runner_alive else 'NOT ALIVE'})"

    rows = [
        [
            t.id[:8],
            t.served_by,
            t.status or "-",
            t.pool,
            t.tool or "-",
            t.principal or "-",
            runner(t),
            "-" if t.age_s is None else f"{t.age_s:g} s",
            f"{t.ttl_ms} ms",
        ]
        for t in tasks
    ]
    headers = ["TASK", "SERVED BY", "STATUS", "POOL", "TOOL", "PRINCIPAL", "RUNNER", "AGE", "TTL"]
    return f"tasks: {len(tasks)}\n" + _table(headers, rows)


def session_text(session: Session) -> str:
    lines = [
        f"session     {session.id}",
        f"pool        {session.pool}",
        f"instance    {session.instance}",
        f"protocol    {session.protocol}",
        f"principal   {session.principal or '-'}",
        f"age         {session.age_s:g} s (idle TTL left {session.ttl_ms / 1000:g} s)",
        f"upstream    {'has its own session id' if session.upstream_sid else 'no upstream session id'}",
        *(
            f"member      {m.pool}: {m.state} on {m.instance or '-'} "
            f"({'its own upstream session id' if m.sid else 'no upstream session id'})"
            for m in session.members
        ),
        "",
        streams_text(session.streams),
    ]
    return "\n".join(lines)


async def report(settings: Settings, view: str, session_id: str | None, *, as_json: bool) -> str:
    """One view (`all`, `replicas`, `sessions`, `streams`, `tasks`, `session`) of the store, as text or JSON."""
    redis = connect(
        settings.redis_url,
        max_connections=4,
        cluster=settings.redis_cluster,
        sentinels=settings.sentinels(),
        sentinel_master=settings.redis_sentinel_master,
    )
    try:
        inspector = Inspector(redis, Keys(settings.key_prefix))
        if view == "session":
            found = await inspector.session(session_id or "")
            return as_json_text(found) if as_json else session_text(found)
        replicas = await inspector.replicas() if view in ("all", "replicas") else []
        sessions = (
            await inspector.sessions(streams=view != "sessions") if view in ("all", "sessions", "streams") else []
        )
        streams = [stream for s in sessions for stream in s.streams]
        tasks = await inspector.tasks() if view in ("all", "tasks") else []
        if as_json:
            parts: dict[str, list[Any]] = {
                "replicas": replicas,
                "sessions": sessions,
                "streams": streams,
                "tasks": tasks,
            }
            if view == "all":
                return json.dumps({k: [asdict(v) for v in vs] for k, vs in parts.items()}, indent=2, sort_keys=True)
            return as_json_text(parts[view])
        texts = {
            "replicas": replicas_text(replicas),
            "sessions": sessions_text(sessions),
            "streams": streams_text(streams),
            "tasks": tasks_text(tasks),
        }
        return "\n\n".join(texts.values()) if view == "all" else texts[view]
    finally:
        await redis.aclose()
