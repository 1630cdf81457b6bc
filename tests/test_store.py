"""The store connection against real Redis: a bounded, blocking pool and translated failures."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as redis_exceptions

from gateway import errors
from gateway.store.client import connect, translated


async def test_pool_burst_waits_for_a_free_connection(redis_url: str, key_prefix: str) -> None:
    client = connect(redis_url, max_connections=2, pool_timeout=5.0)
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


async def test_unreachable_redis_is_store_error() -> None:
    client = connect("redis://127.0.0.1:1/0", max_connections=4, pool_timeout=0.5)
    try:
        with pytest.raises(errors.StoreError), translated():
            await client.ping()
    finally:
        await client.aclose()


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
