"""Session affinity: forward a session's request to its instance, or re-establish it elsewhere.

When the affined instance refuses connections (or forgot the upstream session), the pool's
policy decides: `expire` ends the gateway session (404, the client re-initializes); `reinit`
replays the stored initialize params and `notifications/initialized` on another healthy
instance, records the new upstream session id, and carries on. A lock in Redis makes
concurrent requests of one session create exactly one new upstream session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from collections.abc import Awaitable, Mapping

from gateway import errors
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.store.sessions import SessionRecord, SessionStore
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.wire.protocol import H_SESSION, H_VERSION, JSON, SSE

log = logging.getLogger("gateway.upstream.affinity")

REINIT_LOCK_TTL_MS = 15_000
REINIT_WAIT = 15.0


class Affinity:
    def __init__(
        self,
        *,
        pools: Pools,
        sessions: SessionStore,
        upstream: UpstreamClient,
        redis: Redis,
        keys: Keys,
        max_body: int,
    ) -> None:
        self._pools = pools
        self._sessions = sessions
        self._upstream = upstream
        self._redis = redis
        self._keys = keys
        self._max_body = max_body

    async def send(
        self, record: SessionRecord, method: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[SessionRecord, UpstreamResponse]:
        """Send on the session's instance; on instance loss apply the pool's policy once."""
        if self._pools.is_healthy(record.instance):
            try:
                response = await self._send_on(record, method, headers, body)
            except errors.UpstreamUnavailable:
                # Refused even after the connect retries: the instance is gone until a probe says so.
                self._pools.mark_down(record.instance, "connection refused")
            else:
                self._pools.report_success(record.instance)
                if not (response.status == 404 and record.upstream_sid):
                    return record, response
                response.close()  # the upstream forgot the session (restarted): nothing was processed
        record = await self._instance_lost(record)
        return record, await self._send_on(record, method, headers, body)

    def _send_on(
        self, record: SessionRecord, method: str, headers: Mapping[str, str], body: bytes | None
    ) -> Awaitable[UpstreamResponse]:
        """The client's send, with the session's upstream id (not a coroutine of its own: one
        frame less to enter and resume per request)."""
        merged = dict(headers)
        merged.pop("Mcp-Session-Id", None)
        if record.upstream_sid:
            merged["Mcp-Session-Id"] = record.upstream_sid
        return self._upstream.send(method, record.instance, merged, body)

    async def _instance_lost(self, record: SessionRecord) -> SessionRecord:
        policy = self._pools.get(record.pool).on_instance_loss
        if policy == "expire":
            await self._sessions.delete(record.id)
            raise errors.SessionNotFound("Session not found (its upstream instance is gone)")
        return await self.reestablish(record)

    async def reestablish(self, record: SessionRecord) -> SessionRecord:
        lock = self._keys.reinit_lock(record.id)
        token = secrets.token_hex(8)
        with translated():
            owned = await self._redis.set(lock, token, nx=True, px=REINIT_LOCK_TTL_MS)
        if not owned:
            return await self._wait_for_other(record)
        try:
            fresh = await self._sessions.load(record.id, record.principal)
            if (fresh.instance, fresh.upstream_sid) != (record.instance, record.upstream_sid):
                return fresh  # another replica already did it
            return await self._initialize_elsewhere(fresh)
        finally:
            with translated():
                if await self._redis.get(lock) == token.encode():
                    await self._redis.delete(lock)

    async def _wait_for_other(self, record: SessionRecord) -> SessionRecord:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REINIT_WAIT
        while loop.time() < deadline:
            await asyncio.sleep(0.05)
            fresh = await self._sessions.load(record.id, record.principal)
            if (fresh.instance, fresh.upstream_sid) != (record.instance, record.upstream_sid):
                return fresh
        raise errors.UpstreamUnavailable("Upstream session is being re-established; retry")

    async def _initialize_elsewhere(self, record: SessionRecord) -> SessionRecord:
        # A live instance that forgot the session (restart) may host the new one; a dead one may not.
        avoid = frozenset() if self._pools.is_healthy(record.instance) else frozenset({record.instance})
        instance = self._pools.pick(record.pool, avoid=avoid)
        headers = {"Accept": f"{JSON}, {SSE}", "Content-Type": JSON}
        init = {
            "jsonrpc": "2.0",
            "id": f"mcpgw-reinit-{secrets.token_hex(4)}",
            "method": "initialize",
            "params": json.loads(record.init_params),
        }
        response = await self._upstream.send("POST", instance, headers, json.dumps(init).encode())
        upstream_sid = response.headers.get(H_SESSION, "")
        status = response.status
        await response.read(self._max_body)
        if status != 200:
            raise errors.UpstreamError(f"Re-initializing the upstream session failed: HTTP {status}")
        if record.protocol != "2025-03-26":
            headers[H_VERSION] = record.protocol
        if upstream_sid:
            headers[H_SESSION] = upstream_sid
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        (await self._upstream.send("POST", instance, headers, note)).close()
        await self._sessions.update_upstream(record.id, instance, upstream_sid)
        log.warning("session %s: instance %s lost; re-established on %s", record.id[:8], record.instance, instance)
        return dataclasses.replace(record, instance=instance, upstream_sid=upstream_sid)
