"""bench/floor.py: the floor server puts a JSON call's wire work on Redis and the upstream as the
gateway does (the gateway's claim script, keys and claim record), and relays the answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis

from bench.floor import _App
from gateway.store.claims import Claim, claim_field
from gateway.store.keys import Keys
from gateway.store.sessions import SessionStore, new_record
from gateway.wire import protocol

ANSWER = b'{"jsonrpc":"2.0","id":"c-1","result":{"content":[]}}'


class Written:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


async def test_a_call_claims_its_id_forwards_it_and_records_the_answer(
    redis_url: str, redis: aioredis.Redis, key_prefix: str
) -> None:
    seen: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(ANSWER))
        writer.write(ANSWER)
        await writer.drain()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    keys = Keys(key_prefix)
    sid = protocol.new_session_id()
    record = new_record(sid, pool="default", instance="i", upstream_sid="up-1", protocol="2025-11-25",
                        principal="", init_params={})  # fmt: skip
    await SessionStore(redis, keys, ttl=60).create(record)
    app = _App(redis_url, key_prefix, f"http://127.0.0.1:{port}/mcp")
    written = Written()
    body = json.dumps({"jsonrpc": "2.0", "id": "c-1", "method": "tools/call", "params": {}}).encode()
    try:
        await app.call(written, sid, body)  # type: ignore[arg-type]
        await asyncio.sleep(0.1)  # the record is a cast: nobody waits for it
        stored: Any = await redis.hget(keys.requests(sid), claim_field("c-1"))
    finally:
        server.close()
        await app.aclose()
    assert written.data.endswith(b"\r\n\r\n" + ANSWER) and f"mcp-session-id: {sid}".encode() in written.data
    assert b"\r\nMcp-Session-Id: up-1\r\n" in seen[0]  # the upstream's own session id, as the gateway sends
    claim = Claim.from_json(stored)
    assert (claim.status, claim.answer) == (200, ANSWER.decode())
