"""The scripts' lane (`store/lane.py`): pipelined commands on one connection against real Redis,
and its failure cases against a scripted RESP server (a connection lost after the write, a Redis
that stops answering, one that cannot be reached)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from gateway import errors
from gateway.store import lane as lanes
from gateway.store.client import LanedRedis, Script, connect, translated
from tests.integration.procs import free_port

ECHO = "return {KEYS[1], ARGV[1]}"
INCR = "return redis.call('INCR', KEYS[1])"


@pytest.fixture
async def laned(redis_url: str) -> AsyncIterator[LanedRedis]:
    client = connect(redis_url, max_connections=4, client_name="mcpgw-test-lane")
    assert isinstance(client, LanedRedis) and client.lane is not None
    try:
        yield client
    finally:
        await client.aclose()


def _lane_connections(info: list[dict[str, str]]) -> list[dict[str, str]]:
    return [c for c in info if c.get("name") == "mcpgw-test-lane"]


async def test_many_concurrent_calls_some_cancelled_each_get_their_own_reply(
    laned: LanedRedis, key_prefix: str
) -> None:
    script = Script(laned, ECHO)

    async def caller(i: int) -> None:
        for j in range(20):
            key, arg = f"{key_prefix}:{i}", f"{i}-{j}"
            assert await script(keys=[key], args=[arg]) == [key.encode(), arg.encode()]

    async def cancelled(i: int) -> None:
        task = asyncio.ensure_future(script(keys=[f"{key_prefix}:c{i}"], args=["x"]))
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    await asyncio.gather(*(caller(i) for i in range(30)), *(cancelled(i) for i in range(30)))


async def test_calls_of_one_turn_share_one_connection_and_one_write(
    laned: LanedRedis, redis: aioredis.Redis, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(laned, INCR)
    await script(keys=[f"{key_prefix}:n"], args=[])  # connects, loads the script
    writes: list[bytes] = []
    node = laned.lane._nodes()[0]  # type: ignore[union-attr]
    connection = await node.connection()
    transport = connection._transport
    assert transport is not None
    real_write = transport.write

    def recording(data: bytes) -> None:
        writes.append(data)
        real_write(data)

    monkeypatch.setattr(transport, "write", recording)
    replies = await asyncio.gather(*(script(keys=[f"{key_prefix}:n"], args=[]) for _ in range(50)))
    assert sorted(replies) == list(range(2, 52))  # every call ran once
    assert len(writes) == 1 and writes[0].count(b"EVALSHA") == 50
    clients = _lane_connections(await redis.client_list())
    pooled = len(laned.connection_pool._available_connections)  # one if it loaded the script (NOSCRIPT)
    assert len(clients) == 1 + pooled  # the lane is one connection, named like the replica's others


async def test_a_flushed_script_is_loaded_again(laned: LanedRedis, redis: aioredis.Redis, key_prefix: str) -> None:
    script = Script(laned, ECHO)
    assert await script(keys=[f"{key_prefix}:a"], args=["1"]) == [f"{key_prefix}:a".encode(), b"1"]
    await redis.script_flush()  # a restarted Redis forgot every script
    assert await script(keys=[f"{key_prefix}:a"], args=["2"]) == [f"{key_prefix}:a".encode(), b"2"]


async def test_credentials_db_and_name_are_sent_on_connect(redis_url: str, key_prefix: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    client = connect(f"{base}/3", client_name="mcpgw-test-lane-db")
    other = aioredis.from_url(f"{base}/3")
    try:
        script = Script(client, INCR)
        assert await script(keys=[f"{key_prefix}:db3"], args=[]) == 1
        assert await other.get(f"{key_prefix}:db3") == b"1"  # ran in db 3
        names = [c["name"] for c in await other.client_list()]
        assert "mcpgw-test-lane-db" in names
    finally:
        await other.delete(f"{key_prefix}:db3")
        await other.aclose()
        await client.aclose()


async def test_a_lane_that_cannot_connect_gives_the_call_to_redis_py(redis_url: str, key_prefix: str) -> None:
    client = connect(redis_url, max_connections=4)
    assert isinstance(client, LanedRedis)
    client.lane = lanes.single(_node_at(("127.0.0.1", free_port())))  # nothing listens there
    try:
        script = Script(client, INCR)
        assert await script(keys=[f"{key_prefix}:fallback"], args=[]) == 1  # ran once, by redis-py
        assert await client.get(f"{key_prefix}:fallback") == b"1"
    finally:
        await client.aclose()


def test_error_replies_become_redis_py_errors_or_are_given_back() -> None:
    import hiredis

    assert isinstance(
        lanes.reply_error(hiredis.ReplyError("NOSCRIPT No matching script")), redis_exceptions.NoScriptError
    )
    for reply in ("MOVED 3999 127.0.0.1:7001", "ASK 3999 127.0.0.1:7001", "READONLY You can't write", "LOADING"):
        assert isinstance(lanes.reply_error(hiredis.ReplyError(reply)), lanes.LaneUnavailable)
    plain = lanes.reply_error(hiredis.ReplyError("ERR wrong number of arguments"))
    assert type(plain) is redis_exceptions.ResponseError


# --- failures, against a scripted RESP server -------------------------------------------------


@contextlib.asynccontextmanager
async def resp_server(
    on_command: Callable[[asyncio.StreamWriter], None],
) -> AsyncIterator[tuple[tuple[str, int], list[bytes]]]:
    """Answers the handshake's PING, then lets `on_command` decide what a command gets; yields the
    address and the bytes of every read, in order."""
    commands: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                commands.append(data)
                if b"PING" in data:
                    writer.write(b"+PONG\r\n")
                else:
                    on_command(writer)
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[:2], commands
    finally:
        server.close()


def _node_at(address: tuple[str, int], timeout: float = 5.0) -> lanes.Node:
    async def resolve() -> tuple[str, int]:
        return address

    return lanes.Node(resolve, [["PING"]], connect_timeout=1.0, timeout=timeout)


async def test_a_connection_lost_after_the_write_fails_the_call_and_never_sends_it_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with resp_server(lambda writer: writer.close()) as (address, reads):
        lane = lanes.single(_node_at(address))
        # the client's message is generic (issue 35); the lane's own words go to the log under its id
        with pytest.raises(errors.StoreError, match="correlation id"), translated():
            await lane.call("k", ("EVALSHA", "0" * 40, 1, "k"))
        await lane.aclose()
        assert b"".join(reads).count(b"EVALSHA") == 1
    assert "lane" in caplog.text


async def test_a_redis_that_stops_answering_fails_the_waiting_calls(caplog: pytest.LogCaptureFixture) -> None:
    async with resp_server(lambda writer: None) as (address, _):  # reads, never replies
        lane = lanes.single(_node_at(address, timeout=0.3))
        with pytest.raises(errors.StoreError, match="correlation id"), translated():
            await asyncio.gather(*(lane.call("k", ("EVALSHA", "0" * 40, 1, "k")) for _ in range(3)))
        await lane.aclose()
    assert "no reply from Redis within 0.3 s" in caplog.text


async def test_after_a_lost_connection_the_next_call_reconnects(redis_url: str, key_prefix: str) -> None:
    client = connect(redis_url, max_connections=4, client_name="mcpgw-test-lane-re")
    killer = aioredis.from_url(redis_url)
    try:
        script = Script(client, INCR)
        assert await script(keys=[f"{key_prefix}:re"], args=[]) == 1
        killed = 0
        for c in await killer.client_list():
            if c["name"] == "mcpgw-test-lane-re":
                await killer.client_kill(c["addr"])
                killed += 1
        assert killed >= 1
        await asyncio.sleep(0.1)  # the lane sees its connection closed
        assert await script(keys=[f"{key_prefix}:re"], args=[]) == 2
    finally:
        await killer.aclose()
        await client.aclose()


async def test_a_node_that_is_no_usable_primary_is_given_back_and_connected_afresh() -> None:
    """READONLY (a primary demoted to a replica by a failover): the call is given back to
    redis-py, and the next call opens a new connection (the address is resolved again)."""
    readonly = b"-READONLY You can't write against a read only replica.\r\n"
    async with resp_server(lambda writer: writer.write(readonly)) as (address, reads):
        lane = lanes.single(_node_at(address))
        for _ in range(2):
            with pytest.raises(lanes.LaneUnavailable, match="READONLY"):
                await lane.call("k", ("EVALSHA", "0" * 40, 1, "k"))
        await lane.aclose()
        assert sum(read.count(b"PING") for read in reads) == 2  # two connections, each with its handshake


async def test_a_call_with_no_node_for_its_key_is_given_back_at_once() -> None:
    def nowhere(key: str) -> lanes.Node:
        raise KeyError("slot map not loaded")

    lane = lanes.Lane(nowhere, list)
    with pytest.raises(lanes.LaneUnavailable, match="no node for the key"):
        await lane.call("k", ("GET", "k"))


# --- casts: commands whose reply nobody waits for ------------------------------------------------


async def test_casts_between_calls_run_in_order_and_get_no_reply_a_call_could_take(
    laned: LanedRedis, redis: aioredis.Redis, key_prefix: str
) -> None:
    script, key = Script(laned, INCR), f"{key_prefix}:cast"
    assert not script.cast(keys=[key])  # the lane has not connected yet: nothing is written
    assert await script(keys=[key]) == 1
    results = []
    for _ in range(5):
        assert script.cast(keys=[key])  # 2, 4, 6, 8, 10: run, and Redis sends no reply
        results.append(asyncio.ensure_future(script(keys=[key])))
        await asyncio.sleep(0)  # the call is written now, after the cast (all in one socket write)
    assert await asyncio.gather(*results) == [3, 5, 7, 9, 11]
    assert await redis.get(key) == b"11"


async def test_a_cast_needs_no_script_held_by_redis(laned: LanedRedis, redis: aioredis.Redis, key_prefix: str) -> None:
    """A cast goes by EVAL: after SCRIPT FLUSH (a restarted Redis) it still runs."""
    script, key = Script(laned, INCR), f"{key_prefix}:cast-flush"
    assert await script(keys=[key]) == 1
    await redis.script_flush()
    assert script.cast(keys=[key])
    assert await script(keys=[key]) == 3  # the call reloads the script (NOSCRIPT); the cast ran first


async def test_a_cast_is_written_behind_client_reply_skip() -> None:
    async with resp_server(lambda writer: writer.write(b":7\r\n")) as (address, reads):
        node = _node_at(address)
        lane = lanes.single(node)
        assert not lane.cast("k", ("EVAL", "return 1", 1, "k"))  # not connected yet: nothing written
        await node.connection()
        assert lane.cast("k", ("EVAL", "return 1", 1, "k"))
        await asyncio.sleep(0.05)
        await lane.aclose()
    sent = b"".join(reads)
    assert b"return 1" in sent and sent.index(b"CLIENT\r\n$5\r\nREPLY\r\n$4\r\nSKIP") < sent.index(b"return 1")


async def test_a_refused_cast_leaves_every_call_its_own_reply(laned: LanedRedis, key_prefix: str) -> None:
    key = f"{key_prefix}:cast-error"
    assert await Script(laned, INCR)(keys=[key]) == 1
    assert Script(laned, "return redis.error_reply('ERR refused on purpose')").cast(keys=[key])
    assert await Script(laned, ECHO)(keys=[key], args=["after"]) == [key.encode(), b"after"]
