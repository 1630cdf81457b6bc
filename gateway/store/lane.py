"""The request path's lane to Redis: one pipelined connection per node, shared by every request.

redis-py runs one command per pooled connection at a time and spends far more CPU on each than
Redis does (a pool checkout, a timeout task per write, its parser and retry wrappers:
docs/decisions/0002). The lane writes every command the moment it is issued, coalesced with the others of
the same event-loop turn into one socket write, and hands the replies back in order as hiredis
parses them (Redis answers the commands of one connection in order).
It carries the scripts (`client.Script`), which are the whole of a request's Redis work. A
command may also be *cast*: written the same way behind `CLIENT REPLY SKIP`, so Redis sends no
reply at all (no read, no wake-up, no caller waiting): a request's last write, whose outcome
nobody waits for; a cast that fails is not seen.

What it does not do is decided by redis-py: a command is given back (`LaneUnavailable`) when the
lane cannot write it (no connection yet and connecting failed, a Cluster slot map not loaded) or
when the reply says it belongs elsewhere (MOVED, ASK, a read-only or loading node), so redis-py
runs that one with its redirections, slot-map refresh and retry policy. A command that was written
is never sent again: if its connection is lost first, it fails (`LaneLost`, a ConnectionError, so
`translated` makes it a StoreError) since it may have run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
from redis import exceptions as redis_exceptions

Address = tuple[str, int]
Resolve = Callable[[], Awaitable[Address]]

REPLY_TIMEOUT = 10.0  # s without any reply while commands wait: the connection is dropped
# Replies that mean "run this elsewhere": redis-py knows how (redirection, slot-map refresh, failover).
GIVE_BACK = (b"MOVED", b"ASK", b"TRYAGAIN", b"CLUSTERDOWN", b"READONLY", b"LOADING", b"MASTERDOWN")
RECONNECT = (b"READONLY", b"LOADING", b"MASTERDOWN")  # this node is not (yet) a usable primary


class LaneUnavailable(Exception):
    """The command was not run by the lane: run it through redis-py."""

    def __init__(self, message: str, *, reconnect: bool = False) -> None:
        super().__init__(message)
        self.reconnect = reconnect  # the node is not (yet) a usable primary: drop the connection


class LaneLost(redis_exceptions.ConnectionError):
    """The connection closed after the command was written: it may or may not have run."""


def _pack(args: Sequence[str | bytes | int | float]) -> bytes:
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]  # its stub types a 1-tuple
    return packed


# Redis sends no reply to the command that follows, nor to this one (CLIENT REPLY, since 3.2).
_SKIP_REPLY = _pack(("CLIENT", "REPLY", "SKIP"))


def reply_error(error: hiredis.ReplyError) -> Exception:
    """A Redis error reply as the exception redis-py would raise for it."""
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return redis_exceptions.NoScriptError(message)
    code = message.encode()
    if code.startswith(GIVE_BACK):
        return LaneUnavailable(message, reconnect=code.startswith(RECONNECT))
    return redis_exceptions.ResponseError(message)


class _Connection(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._waiting: list[asyncio.Future[Any]] = []
        self._head = 0  # replies already handed out of `_waiting`
        self._unsent: list[bytes] = []
        self._replies = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.alive = True

    def _queue(self, *packed: bytes) -> None:
        if not self._unsent:
            self._loop.call_soon(self._flush)  # everything issued in this turn goes in one write
        self._unsent.extend(packed)

    def call(self, packed: bytes) -> asyncio.Future[Any]:
        self._queue(packed)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._waiting.append(future)
        if self._watchdog is None:
            self._arm()
        return future

    def cast(self, packed: bytes) -> None:
        """`call` without a reply: Redis skips it (`CLIENT REPLY SKIP`), so nothing is awaited."""
        self._queue(_SKIP_REPLY, packed)

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self._transport is not None and self.alive:
            self._transport.write(b"".join(unsent))

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        unusable: str | None = None
        try:
            while (reply := reader.gets()) is not False:
                future = waiting[self._head]
                self._head += 1
                self._replies += 1
                if isinstance(reply, hiredis.ReplyError):
                    error = reply_error(reply)
                    if isinstance(error, LaneUnavailable) and error.reconnect:
                        unusable = str(error).split()[0]
                    if not future.done():
                        future.set_exception(error)
                elif not future.done():  # a cancelled caller: its reply is read and dropped
                    future.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.close(f"protocol error: {exc}")
            return
        if unusable is not None:  # not (yet) a usable primary: the next call connects afresh
            self.close(f"node answered {unusable}")
            return
        if self._head == len(waiting):
            waiting.clear()
            self._head = 0
        elif self._head > 1024:
            del waiting[: self._head]
            self._head = 0

    def _arm(self) -> None:
        self._watchdog = self._loop.call_later(self._timeout, self._check, self._replies)

    def _check(self, replies_then: int) -> None:
        self._watchdog = None
        if self._head == len(self._waiting):
            return  # nothing waits
        if self._replies == replies_then:
            self.close(f"no reply from Redis within {self._timeout:g} s")
        else:
            self._arm()

    def close(self, why: str = "closed") -> None:
        if self._transport is not None:
            self._transport.abort()
        self._lost(why)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(f"connection lost: {exc}" if exc else "connection closed by Redis")

    def _lost(self, why: str) -> None:
        self.alive = False
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting, self._head = self._waiting[self._head :], [], 0
        self._unsent = []
        for future in waiting:
            if not future.done():
                future.set_exception(LaneLost(f"Redis lane: {why}"))


class Node:
    """One Redis primary: its address (resolved again on every reconnect, so a Sentinel
    failover is followed) and the lane's connection to it."""

    def __init__(
        self, resolve: Resolve, handshake: Sequence[Sequence[str | int]], *, connect_timeout: float, timeout: float
    ) -> None:
        self._resolve = resolve
        self._handshake = [_pack(command) for command in handshake]
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._connection: _Connection | None = None
        self._lock = asyncio.Lock()

    async def connection(self) -> _Connection:
        connection = self._connection
        if connection is not None and connection.alive:
            return connection
        async with self._lock:
            if self._connection is None or not self._connection.alive:
                try:
                    self._connection = await self._connect()
                except (TimeoutError, OSError, redis_exceptions.RedisError) as exc:
                    raise LaneUnavailable(f"cannot connect: {exc}") from exc
            return self._connection

    async def _connect(self) -> _Connection:
        host, port = await self._resolve()
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(
            loop.create_connection(lambda: _Connection(self._timeout), host, port), self._connect_timeout
        )
        try:  # an error reply is set on its future: gather raises it
            await asyncio.gather(*(connection.call(packed) for packed in self._handshake))
        except BaseException:
            connection.close("handshake failed")
            raise
        return connection

    def drop(self) -> None:
        if self._connection is not None:
            self._connection.close("dropped")

    def cast(self, packed: bytes) -> bool:
        """Cast on the open connection; False (nothing written) when there is none yet."""
        connection = self._connection
        if connection is None or not connection.alive:
            return False
        connection.cast(packed)
        return True

    def call(self, packed: bytes) -> Awaitable[Any]:
        """The reply's future on the open connection (no coroutine of its own: the request path
        awaits it straight), or a coroutine that connects first."""
        connection = self._connection
        if connection is not None and connection.alive:
            return connection.call(packed)
        return self._connect_and_call(packed)

    async def _connect_and_call(self, packed: bytes) -> Any:
        return await (await self.connection()).call(packed)


class Lane:
    """The lane of one replica: `route(key)` names the node that serves a key (the one primary,
    or on a Cluster the primary of the key's slot)."""

    def __init__(self, route: Callable[[str], Node], nodes: Callable[[], Sequence[Node]]) -> None:
        self._route = route
        self._nodes = nodes

    def call(self, key: str, args: Sequence[str | bytes | int | float]) -> Awaitable[Any]:
        """Run one command (`args`, name first) on the node of `key`: await what this returns
        (LaneUnavailable is raised at once when no node serves the key)."""
        try:
            node = self._route(key)
        except Exception as exc:  # a Cluster slot map not loaded yet, a slot no node serves
            raise LaneUnavailable(f"no node for the key: {exc}") from exc
        return node.call(_pack(args))

    def cast(self, key: str, args: Sequence[str | bytes | int | float]) -> bool:
        """Write one command on the node of `key` without waiting for its reply; False when the
        lane could not write it (no open connection, no node known for the key): nothing was sent.
        A written command that fails (a Cluster's MOVED during a resharding, say) is not seen."""
        try:
            node = self._route(key)
        except Exception:  # a Cluster slot map not loaded yet, a slot no node serves
            return False
        return node.cast(_pack(args))

    async def aclose(self) -> None:
        for node in self._nodes():
            node.drop()


def single(node: Node) -> Lane:
    """One primary (a standalone Redis, or the primary the Sentinels name)."""
    return Lane(lambda _key: node, lambda: [node])


def per_node(locate: Callable[[str], Address], new_node: Callable[[Address], Node]) -> Lane:
    """A Cluster: `locate(key)` is the address of the primary serving the key's slot."""
    nodes: dict[Address, Node] = {}

    def route(key: str) -> Node:
        address = locate(key)
        node = nodes.get(address)
        if node is None:
            node = nodes[address] = new_node(address)
        return node

    return Lane(route, lambda: list(nodes.values()))
