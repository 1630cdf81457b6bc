"""The members' upstream sessions: opened at `initialize`, each kept alive on its own.

A member that cannot be reached is DOWN: its calls fail at once with a JSON-RPC error naming it,
the other members carry on. Whenever its pool has a healthy instance again, or it answers 404 for
its upstream session (restarted), the next request that needs it re-opens it by replaying the
client's initialize params; a lock in Redis makes one replica do it for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

from gateway import errors
from gateway.store.client import Redis, translated
from gateway.store.sessions import SessionRecord
from gateway.upstream.client import HeaderPolicy, UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.virtual.record import UP, Member, VirtualSessions
from gateway.wire import answers, protocol

log = logging.getLogger("gateway.virtual.members")

LOCK_TTL_MS = 15_000
LOCK_WAIT = 10.0  # s a request waits for another replica re-opening the same member
BASE_HEADERS = {"Accept": f"{protocol.JSON}, {protocol.SSE}", "Content-Type": protocol.JSON}


class MemberUnavailable(errors.RequestError):
    """A member is down: the request that needs it gets this JSON-RPC error at once (HTTP 200)."""

    code = errors.SERVER_ERROR


def replaced(headers: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """`headers` with `new` in place of any of the same name in another case (a client's `accept`)."""
    names = {name.lower() for name in new}
    return {**{k: v for k, v in headers.items() if k.lower() not in names}, **new}


def with_member(headers: Mapping[str, str], member: Member) -> dict[str, str]:
    """Upstream headers with the member's own upstream session and version."""
    merged = {k: v for k, v in headers.items() if k.lower() not in ("mcp-session-id", "mcp-protocol-version")}
    if member.sid:
        merged[protocol.H_SESSION] = member.sid
    if member.protocol and member.protocol != "2025-03-26":
        merged[protocol.H_VERSION] = member.protocol
    return merged


class Members:
    def __init__(
        self,
        *,
        pools: Pools,
        upstream: UpstreamClient,
        policy: HeaderPolicy,
        sessions: VirtualSessions,
        redis: Redis,
        max_body: int,
        trust_opened: float,
    ) -> None:
        """`trust_opened`: for how long after a member's session was opened a request tries it even
        though this replica still counts its instance down (a few health intervals)."""
        self._trust_opened = trust_opened
        self._pools = pools
        self._policy = policy
        self._upstream = upstream
        self._sessions = sessions
        self._redis = redis
        self._max_body = max_body

    async def open(self, pool: str, params: Any, headers: Mapping[str, str]) -> tuple[Member, dict[str, Any] | None]:
        """A new upstream session on a healthy instance of `pool` (initialize, then initialized);
        DOWN and no result when none answers."""
        tried: set[str] = set()
        while True:
            try:
                instance = self._pools.pick(pool, avoid=frozenset(tried))
            except errors.UpstreamUnavailable:
                return Member(pool), None
            try:
                return await self._open_on(pool, instance, params, headers)
            except errors.UpstreamUnavailable:
                self._pools.report_failure(instance)
                tried.add(instance)
            except errors.GatewayError as exc:
                log.warning("virtual member %s: initialize on %s failed: %s", pool, instance, exc.message)
                return Member(pool), None

    async def _open_on(
        self, pool: str, instance: str, params: Any, headers: Mapping[str, str]
    ) -> tuple[Member, dict[str, Any] | None]:
        request_id = f"mcpgw-virtual-{secrets.token_hex(4)}"
        init = {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}
        sent = replaced(self._policy.build(headers.items(), pool), BASE_HEADERS)
        response = await self._upstream.send("POST", instance, sent, json.dumps(init).encode())
        sid = response.headers.get(protocol.H_SESSION, "")
        payload = await response.read(self._max_body)
        answer = answers.answer_in(payload, response.is_sse, request_id) if response.status == 200 else None
        result = answer.get("result") if answer is not None else None
        if not isinstance(result, dict):
            raise errors.UpstreamError(f"no initialize result (HTTP {response.status})")
        member = Member(pool, instance, sid, protocol.negotiated_version(answer or {}, None), UP, time.time())
        # lifecycle §Initialization: the initialized notification before any other request.
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
        (await self._upstream.send("POST", instance, with_member(sent, member), note)).close()
        self._pools.report_success(instance)
        return member, result

    def fresh(self, member: Member) -> bool:
        """Opened (by some replica) so recently that this replica's health view of its instance may
        lag behind: worth one try, not a refusal, although that view says the instance is down."""
        return time.time() - member.opened < self._trust_opened

    def headers(self, client: Mapping[str, str], member: Member) -> dict[str, str]:
        """What goes upstream to `member`: the client's forwarded headers, the pool's own, its session."""
        return with_member(self._policy.build(client.items(), member.pool), member)

    async def send(
        self, record: SessionRecord, member: Member, headers: Mapping[str, str], body: bytes
    ) -> tuple[Member, UpstreamResponse]:
        """POST `body` on the member's session, re-opening it first (or once, on loss) as needed."""
        if member.state != UP or not (self._pools.is_healthy(member.instance) or self.fresh(member)):
            member = await self.reestablish(record, member, headers)
        else:
            try:
                response = await self._upstream.send("POST", member.instance, self.headers(headers, member), body)
            except errors.UpstreamUnavailable:
                self._pools.mark_down(member.instance, "connection refused")
            else:
                if not (response.status == 404 and member.sid):
                    return member, response
                response.close()  # the member forgot its session (restarted): nothing was processed
            member = await self.reestablish(record, member, headers)
        try:
            response = await self._upstream.send("POST", member.instance, self.headers(headers, member), body)
        except errors.UpstreamUnavailable:
            self._pools.mark_down(member.instance, "connection refused")
            raise MemberUnavailable(f"Member {member.pool!r} of this virtual server is unavailable") from None
        return member, response

    async def ask(
        self, record: SessionRecord, member: Member, headers: Mapping[str, str], message: Mapping[str, Any]
    ) -> tuple[Member, dict[str, Any]]:
        """One request on the member, its whole answer read (lists, reads: nothing to stream)."""
        member, response = await self.send(record, member, headers, json.dumps(message).encode())
        payload = await response.read(self._max_body)
        answer = answers.answer_in(payload, response.is_sse, message.get("id"))
        if answer is None:
            raise errors.UpstreamError(f"Bad upstream answer from member {member.pool!r} (HTTP {response.status})")
        return member, answer

    async def reestablish(self, record: SessionRecord, seen: Member, headers: Mapping[str, str]) -> Member:
        """A fresh upstream session for the member (replaying the client's initialize params), made
        by one replica; MemberUnavailable when its pool has no instance that answers."""
        if not self._pools.pool_ready(seen.pool):
            raise MemberUnavailable(f"Member {seen.pool!r} of this virtual server is unavailable")
        lock, token = self._sessions.lock_key(record.id, seen.pool), secrets.token_hex(8)
        with translated():
            owned = await self._redis.set(lock, token, nx=True, px=LOCK_TTL_MS)
        try:
            if not owned:
                return await self._wait_for_other(record, seen)
            stored = await self._sessions.member(record.id, seen.pool)
            if stored is None:
                raise errors.SessionNotFound("Session not found")  # deleted meanwhile: open nothing
            if stored.state == UP and stored != seen:
                return stored  # another replica re-opened it already
            params = json.loads(record.init_params)
            member, _ = await self.open(seen.pool, params, headers)
            await self._sessions.set_member(record.id, member)
            if member.state != UP:
                raise MemberUnavailable(f"Member {seen.pool!r} of this virtual server is unavailable")
            log.warning("virtual session %s: member %s re-opened on %s", record.id[:8], seen.pool, member.instance)
            return member
        finally:
            if owned:
                with translated():
                    if await self._redis.get(lock) == token.encode():
                        await self._redis.delete(lock)

    async def _wait_for_other(self, record: SessionRecord, seen: Member) -> Member:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT
        while loop.time() < deadline:
            await asyncio.sleep(0.05)
            stored = await self._sessions.member(record.id, seen.pool)
            if stored is not None and stored != seen:
                if stored.state != UP:
                    break
                return stored
            with translated():
                if not await self._redis.exists(self._sessions.lock_key(record.id, seen.pool)):
                    break  # the other replica gave up: the member stays down
        raise MemberUnavailable(f"Member {seen.pool!r} of this virtual server is unavailable")

    async def close(self, member: Member, headers: Mapping[str, str]) -> None:
        """End the member's upstream session (DELETE; a member that refuses or is gone is let be)."""
        if member.state != UP or not member.sid or not self._pools.is_healthy(member.instance):
            return
        with contextlib.suppress(errors.UpstreamError):
            (await self._upstream.send("DELETE", member.instance, self.headers(headers, member))).close()
