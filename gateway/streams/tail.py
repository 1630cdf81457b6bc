"""The multiplexed tail: one pub/sub reader per replica for every stream pumped elsewhere.

A delivery of a stream that this replica does not pump joins the stream's Watch (one per stream,
shared by every local delivery of it). The pump's append script SPUBLISHes each new sequence
number on the stream's shard channel; the reader wakes exactly the watch concerned, and its
deliveries then read with XRANGE. Redis connections stay a small constant per replica: the
command pool plus one pub/sub connection (one per Cluster node that owns watched channels),
whatever the number of streams. Shard channels carry the session's hash tag, so on a Cluster
each notification travels only within the slot's node.

The monitor checks, every `check_interval` and whenever a watch is added or a lease released,
whether the replicas holding watched streams are alive (streams.liveness), and hands the streams
of dead ones (or released ones) to `adopt`, which takes the lease over by compare-and-set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from gateway import errors
from gateway.store.client import pubsub, translated
from gateway.store.eventlog import RELEASED, EventLog
from gateway.store.keys import Keys
from gateway.store.sessions import SessionRecord
from gateway.streams.liveness import Liveness
from gateway.streams.signals import Signal
from gateway.supervisor import checkpoint

log = logging.getLogger(__name__)

SUBSCRIBE_WAIT = 2.0  # seconds to wait for an SSUBSCRIBE confirmation before reading anyway
ADOPT_BATCH = 64  # takeovers attempted at once (each is two round trips)


class Watch(Signal):
    """What this replica knows about one stream pumped elsewhere: newest seq, holder, end."""

    __slots__ = ("cause", "channel", "done", "holder", "ready", "record", "stream", "users", "vanished")

    def __init__(self, record: SessionRecord | None, stream: str, channel: str) -> None:
        super().__init__(0)
        self.record = record
        self.stream = stream
        self.channel = channel
        self.holder: str | None = None
        self.users = 0
        self.done = False  # the stream finished: nothing to take over
        self.vanished = False  # its state is gone from the store: deliveries answer with a gap
        self.cause: Cause | None = None  # why the monitor handed it to `adopt` (reason, evidence)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def joined(self) -> bool:
        """Subscribed and its holder read: only then may the monitor judge it."""
        return self.ready.done() and not self.ready.cancelled() and self.ready.exception() is None

    @property
    def settled(self) -> bool:
        """Nothing left to adopt: finished, vanished, or a plain channel (no stream behind it)."""
        return self.done or self.vanished or self.record is None


Cause = tuple[str, str]  # a takeover's reason (`mcpgw_takeovers_total{reason}`) and its evidence
HANDED_OVER = "handed_over"  # the lease names nobody: its pump let go (a drain) or it expired
ORPHANED_HERE = "orphaned_here"  # the lease names this replica, which no longer pumps the stream
Adopt = Callable[[Watch], Awaitable[None]]


def explained(watch: Watch) -> tuple[int, str, str]:
    """The log level, reason and evidence of taking `watch` over (a drain's handover is routine)."""
    reason, evidence = watch.cause or (HANDED_OVER, "the lease names no holder")
    return (logging.INFO if reason == HANDED_OVER else logging.WARNING), reason, evidence


Pumping = Callable[[str, str], bool]


class Tail:
    def __init__(
        self,
        redis: Any,
        keys: Keys,
        log_: EventLog,
        liveness: Liveness,
        *,
        check_interval: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._log = log_
        self._liveness = liveness
        self._check_interval = check_interval
        self._pubsub: Any = None
        self._watches: dict[str, Watch] = {}
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._unsubscribe: set[str] = set()
        self._kick = asyncio.Event()
        self._adopt: Adopt | None = None
        self._pumping: Pumping = lambda session, stream: False
        self.checks = 0

    def bind(self, adopt: Adopt, pumping: Pumping) -> None:
        """The relay's takeover and "do I pump this" callbacks (the relay owns pumps)."""
        self._adopt, self._pumping = adopt, pumping

    def __len__(self) -> int:
        return len(self._watches)

    async def start(self) -> None:
        """Open the pub/sub connection with this replica's presence subscription (liveness)."""
        with translated():
            self._pubsub = await pubsub(self._redis)  # a Cluster client loads its slot map first
        presence = self._keys.presence(self._liveness.replica_id)
        waiter = self._expect(presence)
        with translated():
            await self._pubsub.ssubscribe(presence)
            while not waiter.done():  # the reader is not running yet: read the confirmation here
                message = await self._get(SUBSCRIBE_WAIT)
                if message is None:
                    raise errors.StoreError("session store did not confirm the presence subscription")
                self._dispatch(message)

    async def aclose(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._read_loop())
            group.create_task(self._monitor_loop())

    # --- deliveries ---------------------------------------------------------------------------

    def watching(self, record: SessionRecord, stream: str) -> contextlib.AbstractAsyncContextManager[Watch]:
        """Join the stream's watch (subscribing first, so no notification can slip past a read)."""
        return self._joined(self._keys.notify(record.id, stream), record, stream)

    def listening(self, channel: str) -> contextlib.AbstractAsyncContextManager[Watch]:
        """Join a plain channel: its watch's seq counts the messages seen (e.g. a legacy outbox)."""
        return self._joined(channel, None, "")

    @contextlib.asynccontextmanager
    async def _joined(self, channel: str, record: SessionRecord | None, stream: str) -> AsyncIterator[Watch]:
        watch = await self._join(channel, record, stream)
        try:
            yield watch
        finally:
            self.leave(watch)

    async def join(self, record: SessionRecord, stream: str) -> Watch:
        """`watching` without a context manager (no generator or exit stack kept per idle
        delivery): every `join` that returns is paired with one `leave`."""
        return await self._join(self._keys.notify(record.id, stream), record, stream)

    async def _join(self, channel: str, record: SessionRecord | None, stream: str) -> Watch:
        watch = self._watches.get(channel)
        if watch is None:
            watch = Watch(record, stream, channel)
            self._watches[channel] = watch
            self._unsubscribe.discard(channel)
            try:
                await self._subscribe(channel)
                if record is not None:
                    watch.holder = await self._log.lease_holder(record.id, stream)
            except BaseException:
                self._watches.pop(channel, None)
                watch.ready.set_exception(errors.StoreError("session store unavailable: watch not set up"))
                watch.ready.exception()  # marked retrieved; joiners waiting on it raise it themselves
                raise
            watch.ready.set_result(None)
            self._kick.set()  # the monitor looks at the new holder at once
        else:
            await asyncio.shield(watch.ready)
        watch.users += 1
        return watch

    def leave(self, watch: Watch) -> None:
        watch.users -= 1
        if watch.users == 0 and self._watches.get(watch.channel) is watch:
            del self._watches[watch.channel]
            self._unsubscribe.add(watch.channel)  # batched by the monitor
            self._kick.set()

    async def _subscribe(self, channel: str) -> None:
        waiter = self._expect(channel)
        with translated():
            await self._pubsub.ssubscribe(channel)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SUBSCRIBE_WAIT):
                await asyncio.shield(waiter)

    def _expect(self, channel: str) -> asyncio.Future[None]:
        waiter = self._confirm.get(channel)
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._confirm[channel] = waiter
        return waiter

    # --- the reader -----------------------------------------------------------------------------

    async def _get(self, timeout: float) -> Any:
        reader = getattr(self._pubsub, "get_sharded_message", None)  # Cluster: one pub/sub per node
        if reader is not None:
            return await reader(timeout=timeout)
        return await self._pubsub.get_message(timeout=timeout)

    async def _read_loop(self) -> None:
        while True:
            checkpoint()
            try:
                with translated():
                    message = await self._get(1.0)
            except errors.StoreError as exc:
                checkpoint()
                log.warning("tail: pub/sub read failed, re-reading every watched stream: %s", exc)
                await asyncio.sleep(0.2)
                self._wake_all()  # notifications may have been missed while disconnected
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = _text(message.get("type"))
        channel = _text(message.get("channel"))
        watch = self._watches.get(channel)
        if kind == "smessage":
            if watch is None:
                return
            data: Any = message.get("data")
            if watch.record is None:
                watch.notify(watch.seq + 1)
            elif data == RELEASED:
                watch.holder = None  # handed over without finishing: adopt it now
                self._kick.set()
                watch.notify(watch.seq)
            else:
                watch.notify(int(data))
        elif kind == "ssubscribe":
            waiter = self._confirm.pop(channel, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            elif watch is not None:
                watch.notify(watch.seq)  # re-subscribed after a reconnect: read what may have been missed

    def wake_all(self) -> None:
        """Wake every waiting delivery (graceful drain)."""
        self._wake_all()

    def _wake_all(self) -> None:
        for watch in list(self._watches.values()):
            watch.notify(watch.seq)

    # --- the monitor ----------------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        while True:
            checkpoint()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_interval):
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self._flush_unsubscribes()
                await self.check()
            except errors.StoreError as exc:
                checkpoint()
                log.warning("tail: liveness check failed: %s", exc)

    async def check(self) -> None:
        """Hand every watched stream whose holder is gone (dead, released) to `adopt`."""
        self.checks += 1
        me = self._liveness.replica_id
        watches = [w for w in self._watches.values() if w.joined and not w.settled]
        if not watches or self._adopt is None:
            return
        verdicts = await self._liveness.verdicts({w.holder for w in watches if w.holder})
        orphans = []
        for watch in watches:
            session = watch.record.id if watch.record is not None else ""
            verdict = verdicts.get(watch.holder) if watch.holder is not None else None
            if watch.holder is None:
                watch.cause = (HANDED_OVER, "the lease names no holder")
            elif watch.holder == me:
                if self._pumping(session, watch.stream):
                    continue
                watch.cause = (ORPHANED_HERE, "the lease names this replica, which pumps no such stream")
            elif verdict is None or verdict.alive:
                continue
            else:
                watch.cause = (verdict.reason, verdict.evidence())
            orphans.append(watch)
        for start in range(0, len(orphans), ADOPT_BATCH):  # a dead replica's streams, in parallel batches
            await asyncio.gather(*(self._adopt(w) for w in orphans[start : start + ADOPT_BATCH]))

    async def _flush_unsubscribes(self) -> None:
        channels = [c for c in self._unsubscribe if c not in self._watches]
        self._unsubscribe.clear()
        if channels:
            with translated():
                await self._pubsub.sunsubscribe(*channels)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
