"""The store connection: a bounded, blocking pool and translated failures against real Redis; the
Cluster and Sentinel clients as `connect` builds them (their real servers: tests/integration)."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as redis_exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection
from redis.exceptions import SlotNotCoveredError

from gateway import errors, retry
from gateway.store.client import Script, connect, translated


async def test_pool_burst_waits_for_a_free_connection(redis_url: str, key_prefix: str) -> None:
    client = connect(redis_url, max_connections=2, pool_timeout=5.0, lane=False)
    try:
        key = f"{key_prefix}:burst"
        # 6 blocking reads on 2 connections: the later ones wait for a connection, none fails
        results = await asyncio.gather(*(client.xread({key: "0-0"}, block=200) for _ in range(6)))
        assert len(results) == 6 and all(not r for r in results)  # each timed out empty, none raised
        assert client.connection_pool.max_connections == 2
    finally:
        await client.aclose()


async def test_pool_exhausted_past_timeout_is_store_error(redis_url: str, key_prefix: str) -> None:
    client = connect(redis_url, max_connections=1, pool_timeout=0.2)
    try:
        key = f"{key_prefix}:held"
        holder = asyncio.ensure_future(client.xread({key: "0-0"}, block=1500))
        await asyncio.sleep(0.1)  # the only connection is now blocked in XREAD
        with pytest.raises(errors.StoreError) as info, translated():
            await client.ping()
        assert info.value.status == 503
        assert not await holder  # the blocked read itself completes normally
    finally:
        await client.aclose()


async def test_pool_reuses_a_clean_connection_and_replaces_a_broken_one(redis_url: str, key_prefix: str) -> None:
    client = connect(redis_url, max_connections=2, pool_timeout=1.0)
    try:
        pool = client.connection_pool
        await client.set(f"{key_prefix}:k", "1")
        first = next(iter(pool._available_connections))
        assert await client.get(f"{key_prefix}:k") == b"1"
        assert pool._available_connections == [first] and not pool._in_use_connections  # the same one, back
        await first.disconnect()  # a connection redis-py dropped (failure, cancellation mid-command)
        assert await client.get(f"{key_prefix}:k") == b"1"  # the pool's full path reconnects it
        assert len(pool._available_connections) == 1 and first.is_connected
    finally:
        await client.aclose()


async def test_pool_never_hands_out_a_reply_meant_for_another_command(redis_url: str, key_prefix: str) -> None:
    """Many tasks on a small pool, some cancelled mid-command: every reply still matches its request
    (a connection cancelled mid-command is dropped by redis-py, never reused with a reply pending)."""
    client = connect(redis_url, max_connections=4, pool_timeout=5.0)
    keys = [f"{key_prefix}:mix:{i}" for i in range(40)]
    try:
        await asyncio.gather(*(client.set(k, k) for k in keys))

        async def reader(key: str) -> None:
            for _ in range(25):
                assert await client.get(key) == key.encode()

        for _ in range(5):
            tasks = [asyncio.ensure_future(reader(k)) for k in keys]
            await asyncio.sleep(0.005)
            for task in tasks[::3]:
                task.cancel()  # some in the pool's wait, some mid-command
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                assert outcome is None or isinstance(outcome, asyncio.CancelledError), outcome
        assert len(client.connection_pool._in_use_connections) == 0
    finally:
        await client.delete(*keys)
        await client.aclose()


async def test_script_is_loaded_again_after_a_script_flush(redis_url: str, key_prefix: str) -> None:
    client = connect(redis_url, max_connections=2)
    try:
        script = Script(client, "return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])")
        key = f"{key_prefix}:n"
        assert await script(keys=[key], args=[10]) == 11
        await client.script_flush()  # a restarted or failed-over Redis forgot every script
        assert await script(keys=[key], args=[10]) == 12
    finally:
        await client.delete(f"{key_prefix}:n")
        await client.aclose()


async def test_unreachable_redis_is_store_error() -> None:
    client = connect("redis://127.0.0.1:1/0", max_connections=4, pool_timeout=0.5)
    try:
        with pytest.raises(errors.StoreError), translated():
            await client.ping()
    finally:
        await client.aclose()


def test_cluster_client_bounded_per_node() -> None:
    client = connect("redis://127.0.0.1:7000/0", cluster=True, max_connections=7)
    assert isinstance(client, RedisCluster)
    assert client.nodes_manager.connection_kwargs["max_connections"] == 6  # and the lane's one per node
    plain = connect("redis://127.0.0.1:7000/0", cluster=True, max_connections=7, lane=False)
    assert plain.nodes_manager.connection_kwargs["max_connections"] == 7


def test_sentinel_client_takes_credentials_db_and_tls_from_the_url() -> None:
    client = connect(
        "rediss://gw:secret@ignored:1/2",
        sentinels=(("s1", 26379), ("s2", 26380)),
        sentinel_master="gwmaster",
        max_connections=5,
        pool_timeout=0.5,
    )
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and isinstance(pool, BlockingConnectionPool)
    assert pool.service_name == "gwmaster" and pool.max_connections == 5 and pool.timeout == 0.5
    assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("gw", "secret", 2)
    assert "host" not in kwargs  # the primary's address comes from the Sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in pool.sentinel_manager.sentinels
    ] == [("s1", 26379), ("s2", 26380)]


async def test_no_sentinel_answering_is_store_error() -> None:
    client = connect(None, sentinels=(("127.0.0.1", 1),), pool_timeout=0.5)
    try:
        with pytest.raises(errors.StoreError), translated():
            await client.ping()
    finally:
        await client.aclose()


def test_cluster_exceptions_are_store_errors(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(errors.StoreError, match=r"^session store unavailable") as raised, translated():
        raise SlotNotCoveredError('Slot "1" is not covered by the cluster.')
    # issue 35: the client's message is generic; the details are in the log under its correlation id
    assert "SlotNotCoveredError" not in raised.value.message
    assert f"{raised.value.data['correlationId']}]: SlotNotCoveredError" in caplog.text


def test_every_client_uses_the_gateways_redis_retry_policy() -> None:
    single = connect("redis://127.0.0.1:1/0")
    sentinel = connect(None, sentinels=(("127.0.0.1", 1),))
    cluster = connect("redis://127.0.0.1:7000/0", cluster=True)
    assert isinstance(cluster, RedisCluster) and isinstance(sentinel.connection_pool, SentinelConnectionPool)
    policy = retry.redis_client()
    for pool in (single.connection_pool, sentinel.connection_pool):
        used = pool.connection_kwargs["retry"]
        assert (used.get_retries(), type(used._backoff)) == (policy.get_retries(), type(policy._backoff))
    assert cluster.retry.get_retries() == policy.get_retries()
    # a Sentinel is asked once per discovery: the primary's retries repeat the discovery
    asked = sentinel.connection_pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["retry"]
    assert asked.get_retries() == retry.sentinel_query().get_retries() == 0


def test_transport_closed_under_redis_py_is_store_error(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(errors.StoreError, match=r"^session store unavailable"), translated():
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")
    assert "handler is closed" in caplog.text


async def test_pool_exhaustion_is_store_busy_not_an_outage(redis_url: str) -> None:
    """No free connection within the pool timeout: nothing was sent, so it is StoreBusy (retryable)."""
    client = connect(redis_url, max_connections=1, pool_timeout=0.2)
    try:
        holder = asyncio.ensure_future(client.blpop(["mcpgw-test:never"], timeout=2))  # holds the one connection
        await asyncio.sleep(0.1)
        with pytest.raises(errors.StoreBusy), translated():
            await client.ping()
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    finally:
        await client.aclose()
    with pytest.raises(errors.StoreError) as info, translated():
        raise redis_exceptions.ConnectionError("Connection refused")
    assert not isinstance(info.value, errors.StoreBusy)  # a refused connection is an outage
