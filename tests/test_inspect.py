"""`mcp-gateway inspect` against real Redis, with sessions and a pumped stream made by a running app."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.cli import main
from gateway.errors import SessionNotFound
from gateway.inspection import Inspector
from gateway.store.eventlog import EventLog
from gateway.store.keys import Keys
from gateway.store.sessions import SessionStore, new_record
from gateway.tasks.passthrough import Route, TaskRoutes
from gateway.tasks.record import TaskRecord
from gateway.tasks.store import TaskStore
from tests.gateway_env import Env, call, running_gateway

READ_ONLY = {"SCAN", "HGETALL", "PTTL", "XLEN", "GET", "OBJECT", "ECHO", "CLIENT", "PING"}


@pytest.fixture
async def env(redis_url: str, key_prefix: str) -> AsyncIterator[Env]:
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix) as env:
        yield env


async def open_hanging_call(env: Env, sid: str) -> None:
    """A tools/call whose answer never comes: its stream stays pumped, with request 2 pending."""
    async with env.client.stream("POST", env.mcp, headers=env.headers(sid), json=call("hang")) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for _ in response.aiter_bytes():
            break  # the priming event; disconnecting is not cancellation, the pump keeps the stream


async def test_inspector_sees_replicas_sessions_streams_and_owners(env: Env, redis: aioredis.Redis, keys: Keys) -> None:
    first, second = await env.initialize(), await env.initialize("2025-06-18")
    await open_hanging_call(env, first)
    owner = env.app.state.gateway.relay._replica  # the replica id this app's pumps write into leases
    await redis.set(keys.replica("ghost:1:dead"), "1", px=10_000)  # another replica's heartbeat

    inspector = Inspector(redis, keys)
    assert [r.id for r in await inspector.replicas()] == sorted([owner, "ghost:1:dead"])
    sessions = await inspector.sessions()
    assert {s.id for s in sessions} == {first, second}
    by_id = {s.id: s for s in sessions}
    assert by_id[second].protocol == "2025-06-18" and by_id[second].streams == []
    assert by_id[first].pool == "default" and by_id[first].instance.endswith("/mcp")
    assert by_id[first].age_s >= 0 and by_id[first].ttl_ms > 0 and by_id[first].principal == ""
    (stream,) = by_id[first].streams
    assert (stream.kind, stream.pending, stream.done, stream.session) == ("post", [2], False, first[:8])
    assert stream.owner == owner and stream.owner_alive is True and stream.lease_idle_s is not None

    with pytest.raises(SessionNotFound):
        await inspector.session("nope")
    with pytest.raises(SessionNotFound, match="2 sessions"):
        await inspector.session("")  # a prefix shared by both is ambiguous


async def test_a_lease_whose_replica_is_gone_shows_a_dead_owner(redis: aioredis.Redis, key_prefix: str) -> None:
    """Written by hand under a prefix no app serves, so no live replica adopts the stream meanwhile."""
    keys = Keys(f"{key_prefix}:ghosts")  # still under the fixture's prefix: cleaned up with it
    sid = "G" * 32
    store = SessionStore(redis, keys, 60)
    record = new_record(
        sid, pool="p", instance="http://u/mcp", upstream_sid="", protocol="2025-11-25", principal="", init_params={}
    )
    await store.create(record)
    log = EventLog(redis, keys, maxlen=100, ttl=60)
    registration = store.registration("post", (7,))
    await log.open(sid, "S1", kind="post", pending=(7,), owner="ghost:2:gone", registration=registration)
    session = await Inspector(redis, keys).session(sid[:8])
    (stream,) = session.streams
    assert (stream.owner, stream.owner_alive, stream.pending, stream.last_seq) == ("ghost:2:gone", False, [7], 0)


async def test_inspect_reads_only_and_scans(env: Env, redis_url: str, keys: Keys) -> None:
    """MONITOR what the inspector sends: SCAN (never KEYS) and reads, nothing that writes or blocks."""
    sid = await env.initialize()
    await open_hanging_call(env, sid)
    client = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=1))
    watcher = aioredis.from_url(redis_url)
    try:
        info = await client.client_info()  # the inspector's one connection
        marker = f"end-{uuid.uuid4().hex}"
        seen: list[str] = []
        async with watcher.monitor() as monitor:

            async def record() -> None:
                while True:
                    command = await monitor.next_command()
                    if command["client_address"] + ":" + str(command["client_port"]) != info["addr"]:
                        continue
                    if marker in command["command"]:
                        return
                    seen.append(command["command"].split()[0].upper())

            recorder = asyncio.ensure_future(record())
            await asyncio.sleep(0.05)
            inspector = Inspector(client, keys)
            assert len(await inspector.sessions()) == 1
            await inspector.session(sid)
            await client.echo(marker)
            await asyncio.wait_for(recorder, 5)
    finally:
        await client.aclose()
        await watcher.aclose()
    assert "SCAN" in seen and "KEYS" not in seen
    assert set(seen) <= READ_ONLY, set(seen) - READ_ONLY


async def test_cli_inspect_text_and_json(
    env: Env, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sid = await env.initialize()
    await open_hanging_call(env, sid)
    store = ["--redis-url", redis_url, "--key-prefix", key_prefix]

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            main(["inspect", *args])
        out, err = capsys.readouterr()
        return int(done.value.code or 0), out, err

    # the CLI runs its own event loop: call it from a thread, as a shell would run it beside the server
    code, out, _ = await asyncio.to_thread(run, *store)
    assert code == 0 and "sessions: 1" in out and "streams: 1" in out and sid[:8] in out and "[2]" in out
    code, out, _ = await asyncio.to_thread(run, "session", sid[:8], "--json", *store)
    detail = json.loads(out)
    assert code == 0 and detail["id"] == sid and detail["streams"][0]["pending"] == [2]
    code, out, _ = await asyncio.to_thread(run, "streams", "--json", *store)
    assert [s["kind"] for s in json.loads(out)] == ["post"]
    code, _, err = await asyncio.to_thread(run, "session", "zzzz", *store)
    assert code == 1 and "no session 'zzzz'" in err
    code, _, err = await asyncio.to_thread(run, "--key-prefix", key_prefix)
    assert code == 2 and "needs --redis-url" in err


async def test_cli_finds_a_session_whose_id_starts_with_a_dash(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One id in 64 starts with '-' (URL-safe base64): argparse took its prefix for a flag and exited 2."""
    prefix = f"{key_prefix}:dash"
    sid = "-Adjl" + "Z" * 27
    record = new_record(
        sid, pool="p", instance="http://u/mcp", upstream_sid="", protocol="2025-11-25", principal="", init_params={}
    )
    await SessionStore(redis, Keys(prefix), 60).create(record)

    def run(*args: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as done:
            main(["inspect", *args])
        return int(done.value.code or 0), capsys.readouterr().out

    store = ["--redis-url", redis_url, "--key-prefix", prefix]
    code, out = await asyncio.to_thread(run, "session", sid[:8], "--json", *store)
    assert code == 0 and json.loads(out)["id"] == sid
    code, out = await asyncio.to_thread(run, *store, "session", sid[:6])  # the id last, flags first
    assert code == 0 and sid in out


async def test_inspector_lists_served_tasks_with_their_runner_and_routed_ones(
    redis: aioredis.Redis, key_prefix: str, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    keys = Keys(f"{key_prefix}:tasks")  # no app serves this prefix: nothing adopts or expires them meanwhile
    now = int(time.time() * 1000)
    await redis.set(keys.replica("r:1:live"), "1", px=10_000)

    def record(task_id: str, status: str, owner: str) -> TaskRecord:
        return TaskRecord(task_id, status, "alice", "default", "slow", owner, now - 2_000, now, 60_000, 500)

    store = TaskStore(redis, keys)
    await store.create(record("T" * 24, "working", "r:1:live"))
    await store.create(record("D" * 24, "working", "r:2:gone"))
    await store.create(record("C" * 24, "completed", "r:2:gone"))
    routes = TaskRoutes(redis, keys, default_ttl_ms=60_000, max_line=1 << 16)
    await routes.remember("U" * 24, Route("http://up:1/mcp", "bob", "search"), None)

    tasks = {t.id[0]: t for t in await Inspector(redis, keys).tasks()}
    assert set(tasks) == {"T", "D", "C", "U"}
    assert (tasks["T"].served_by, tasks["T"].status, tasks["T"].runner_alive) == ("gateway", "working", True)
    assert tasks["D"].runner_alive is False  # a working task whose runner is gone: adopted at its next read
    completed = tasks["C"]
    assert completed.runner_alive is None and completed.principal == "alice"
    assert completed.age_s is not None and completed.age_s >= 2
    assert (tasks["U"].served_by, tasks["U"].runner, tasks["U"].pool, tasks["U"].status) == (
        "upstream",
        "http://up:1/mcp",
        "search",
        "",
    )
    assert all(0 < t.ttl_ms <= 60_000 for t in tasks.values())

    def run(*args: str) -> str:
        with pytest.raises(SystemExit):
            main(["inspect", *args, "--redis-url", redis_url, "--key-prefix", keys.prefix])
        return capsys.readouterr().out

    out = await asyncio.to_thread(run, "tasks")
    assert "tasks: 4" in out and "r:2:gone (NOT ALIVE)" in out and "TTTTTTTT" in out
    assert {t["served_by"] for t in json.loads(await asyncio.to_thread(run, "tasks", "--json"))} == {
        "gateway",
        "upstream",
    }
