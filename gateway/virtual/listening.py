"""A virtual session's one notification stream: every member's standalone GET, merged into one
stream of the event log that the client's GET delivers (and resumes, on any replica).

The members' streams are read as one upstream response (`MergedResponse`) that the relay pumps
into the event log like any other: one reader per member, on the replica that pumps. A reader
keeps its member's GET open; when the member goes away it marks it down and announces
`notifications/tools/list_changed`; once its pool is healthy again it re-opens the member's
session (the client's initialize replayed) and announces it again. Server-to-client requests get
ids that name their member, so the client's answer goes back to it (`endpoint.py`).
The stream ends (the pump's end marker) when nothing happened for the idle bound or the session is
gone; the client's next GET then starts a new one. A replica killed mid-way: the replica the client
resumes on replays what was logged, finds the stream cannot be re-opened there and ends it; the
client's next GET listens afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway import errors
from gateway.store.sessions import SessionRecord
from gateway.supervisor import Supervisor
from gateway.upstream.client import UpstreamClient, UpstreamResponse
from gateway.upstream.pools import Pools
from gateway.virtual.members import Members, MemberUnavailable, replaced
from gateway.virtual.naming import VirtualServer
from gateway.virtual.record import DOWN, UP, Member, VirtualSessions
from gateway.wire import protocol, sse

log = logging.getLogger("gateway.virtual.listening")

QUIET = 0.05  # s before re-opening a member's stream that ended without a message (doubling)
MAX_BACKOFF = 16  # x the retry interval: the longest wait between re-opening attempts of a failing member

TOOLS_CHANGED = json.dumps({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
LIST_CHANGED = frozenset(f"notifications/{kind}/list_changed" for kind in ("tools", "prompts", "resources"))


def request_id_of(server: VirtualServer, pool: str, request_id: Any) -> str:
    """A member's server-to-client request id, as the client sees it: `<pool><sep><JSON of the id>`."""
    return server.prefixed(pool, json.dumps(request_id))


def member_request_id(server: VirtualServer, value: Any) -> tuple[str, Any] | None:
    """(member pool, its own request id) of an id `request_id_of` made; None for any other id."""
    split = server.split(value) if isinstance(value, str) else None
    if split is None:
        return None
    try:
        return split[0], json.loads(split[1])
    except ValueError:
        return None


class MergedResponse(UpstreamResponse):
    """The members' standalone streams as one upstream SSE response, for the relay's pump: the pump
    logs it (lease, idle bound, drain) as it logs any upstream's. Its readers are the supervisor's
    tasks, cancelled when the pump closes it."""

    __slots__ = ("_queue", "_readers")

    def __init__(self) -> None:  # no HTTP response under it
        self.status = 200
        self.headers: Mapping[str, str] = {}
        self.content_type = protocol.SSE
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._readers: list[asyncio.Task[None]] = []

    def put(self, data: str | None) -> None:
        """One message's JSON for the client (None: the session is gone, the stream ends)."""
        self._queue.put_nowait(data)

    def _drain(self, first: str | None) -> bytes | None:
        batch = [first]
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if None in batch:
            return None
        return b"".join(sse.encode(data) for data in _once([d for d in batch if d is not None]))

    async def next_chunk(self, timeout: float) -> bytes | None:
        async with asyncio.timeout(timeout):
            first = await self._queue.get()
        return self._drain(first)

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := self._drain(await self._queue.get())) is not None:
            yield chunk

    async def read(self, limit: int) -> bytes:
        raise errors.UpstreamError("a merged stream is never read whole")

    def take_buffered(self) -> bytes:
        if self._queue.empty():
            return b""
        return self._drain(self._queue.get_nowait()) or b""

    def forget_headers(self) -> None:
        pass

    def close(self) -> None:
        for reader in self._readers:
            reader.cancel()


class Listener:
    def __init__(
        self,
        *,
        members: Members,
        sessions: VirtualSessions,
        pools: Pools,
        upstream: UpstreamClient,
        supervisor: Supervisor,
        retry: float,
    ) -> None:
        self._members = members
        self._sessions = sessions
        self._pools = pools
        self._upstream = upstream
        self._supervisor = supervisor
        self._retry = retry

    def open(self, server: VirtualServer, record: SessionRecord, headers: Mapping[str, str]) -> MergedResponse:
        """The members' streams, merged: one reader per member from now until the response is closed."""
        merged = MergedResponse()
        kept = dict(headers)
        for pool in server.members:
            task = self._supervisor.spawn(self._read(server, record, pool, kept, merged), name=f"virtual-get:{pool}")
            merged._readers.append(task)
        return merged

    async def _read(
        self,
        server: VirtualServer,
        record: SessionRecord,
        pool: str,
        headers: Mapping[str, str],
        merged: MergedResponse,
    ) -> None:
        """Keep the member's GET open; announce its going and its coming back."""
        first = await self._sessions.member(record.id, pool)
        announced_up = first is not None and first.state == UP  # what the client's lists last showed
        backoff = self._retry
        quiet = QUIET
        refused: Member | None = None  # the member whose standalone stream was refused
        while True:
            member = await self._sessions.member(record.id, pool)
            if member is None:
                merged.put(None)  # the session is gone
                return
            if member.state != UP or not (self._pools.is_healthy(member.instance) or self._members.fresh(member)):
                if not self._pools.pool_ready(pool):
                    await self._mark_down(record, member)
                    if announced_up:
                        merged.put(TOOLS_CHANGED)  # its tools leave the lists
                        announced_up = False
                    await asyncio.sleep(self._retry)
                    continue
                try:
                    member = await self._members.reestablish(record, member, headers)
                except (MemberUnavailable, errors.UpstreamError):
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._retry * MAX_BACKOFF)  # a member that answers but fails
                    continue
                except errors.SessionNotFound:
                    merged.put(None)
                    return
            backoff = self._retry
            if not announced_up:
                merged.put(TOOLS_CHANGED)  # it is back: its tools are in the lists again
                announced_up = True
            if member == refused:  # its GET was refused (405): only its health is left to watch
                await asyncio.sleep(self._retry)
                continue
            sent = replaced(self._members.headers(headers, member), {"Accept": protocol.SSE})
            try:
                response = await self._upstream.send("GET", member.instance, sent, retry_connect=False)
            except errors.UpstreamUnavailable:
                self._pools.mark_down(member.instance, "connection refused")
                continue
            except errors.UpstreamError:
                await asyncio.sleep(self._retry)
                continue
            if response.status == 404 and member.sid:
                response.close()  # the member forgot its session: re-open it on the next turn
                await self._mark_down(record, member)
                continue
            if response.status != 200 or not response.is_sse:
                response.close()  # no standalone stream (405): not asked again while this session lasts
                refused = member
                continue
            relayed = await self._relay(server, pool, response.chunks(), merged)
            response.close()
            if relayed:
                quiet = QUIET
            else:  # a stream that ends empty at once, again and again, is not re-opened in a tight loop
                await asyncio.sleep(quiet)
                quiet = min(quiet * 2, self._retry * MAX_BACKOFF)

    async def _relay(
        self, server: VirtualServer, pool: str, chunks: AsyncIterator[bytes], merged: MergedResponse
    ) -> int:
        """Pass the member's messages on until its stream ends; how many there were."""
        parser = sse.Parser()
        relayed = 0
        try:
            async for chunk in chunks:
                for event in parser.feed(chunk):
                    if event.data:
                        merged.put(_renamed(server, pool, event.data))
                        relayed += 1
        except (errors.GatewayError, sse.SSEError) as exc:
            log.info("virtual member %s: standalone stream ended: %s", pool, exc)
        return relayed

    async def _mark_down(self, record: SessionRecord, member: Member) -> None:
        stored = await self._sessions.member(record.id, member.pool)
        if stored == member and member.state != DOWN:  # not re-opened by another replica meanwhile
            await self._sessions.set_member(record.id, dataclasses.replace(member, state=DOWN))


def _renamed(server: VirtualServer, pool: str, data: str) -> str:
    """A member's message as the client sees it: a server-to-client request's id names the member."""
    try:
        message = json.loads(data)
    except ValueError:
        return data
    if isinstance(message, dict) and "method" in message and "id" in message:
        message["id"] = request_id_of(server, pool, message["id"])
        return json.dumps(message)
    return data


def _once(batch: list[str]) -> list[str]:
    """The batch with each list_changed once (several members, or one twice, in the same moment)."""
    seen: set[str] = set()
    kept: list[str] = []
    for data in batch:
        method = None
        with contextlib.suppress(ValueError, AttributeError):
            method = json.loads(data).get("method")
        if method in LIST_CHANGED:
            if method in seen:
                continue
            seen.add(method)
        kept.append(data)
    return kept
