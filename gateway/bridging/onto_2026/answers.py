"""A 2025 client's answers to the server-to-client requests the bridge asked for an upstream's
input-required result, collected in Redis so that any replica may receive them.

The request ids the bridge gives those requests name the stream they were sent on
(`mcpgw.{stream}.{round}.{key}`), so the replica that receives an answer (a POSTed JSON-RPC
response) files it under that stream without a lookup; the replica running the call collects it.
The collector polls a short list rather than blocking a pooled connection (BLPOP would hold one
per waiting call).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Mapping
from typing import Any

from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.wire import cursor

ID_PREFIX = "mcpgw."
POLL_FIRST = 0.02  # s between looks at first, doubling up to POLL_MAX
POLL_MAX = 0.25
TAKE = 100  # answers taken per look


def input_id(stream: str, round_: int, key: str) -> str:
    return f"{ID_PREFIX}{stream}.{round_}.{key}"


def stream_of(answer_id: Any) -> str | None:
    """The stream an answer belongs to, from its id; None when the id is not one the bridge gave."""
    if not isinstance(answer_id, str) or not answer_id.startswith(ID_PREFIX):
        return None
    stream = answer_id[len(ID_PREFIX) :].split(".", 1)[0]
    return stream if cursor.valid_stream_id(stream) else None


class Answers:
    def __init__(self, redis: Redis, keys: Keys, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = int(ttl * 1000)

    async def put(self, session: str, message: Mapping[str, Any]) -> bool:
        """File one client answer; False when its id names no bridged stream (not ours to take)."""
        stream = stream_of(message.get("id"))
        if stream is None:
            return False
        key = self._keys.bridge_answers(session, stream)
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(key, json.dumps(message))
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()
        return True

    async def cancel(self, session: str, stream: str, request_id: Any) -> None:
        """Note that the client cancelled `request_id`, answered on `stream` (notifications/cancelled)."""
        key = self._keys.bridge_cancelled(session, stream)
        with translated():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(key, json.dumps(request_id))
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()

    async def cancelled(self, session: str, stream: str, request_id: Any) -> bool:
        with translated():
            found = await self._redis.sismember(self._keys.bridge_cancelled(session, stream), json.dumps(request_id))
        return bool(found)

    async def collect(self, session: str, stream: str, ids: Collection[str], timeout: float) -> dict[str, Any]:
        """The answers to `ids` (by id), as many as arrived within `timeout` seconds."""
        key = self._keys.bridge_answers(session, stream)
        found: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        pause = POLL_FIRST
        while True:
            with translated():
                # One atomic take: nothing pushed meanwhile is lost.
                raw: list[bytes] | None = await self._redis.lpop(key, TAKE)  # type: ignore[assignment]
            for item in raw or ():
                message = json.loads(item)
                if isinstance(message, dict) and message.get("id") in ids:
                    found[message["id"]] = message
            if len(found) >= len(ids) or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(pause)
            pause = min(pause * 2, POLL_MAX)
