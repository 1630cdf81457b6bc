"""Where audit records go: stdout (one JSON line each) and a capped Redis stream.

Writing never holds up an answer: the Redis sink queues records (bounded) and one owned task
writes them in pipelined batches (a record waits at most LINGER for others to join it); a record
that finds the queue full, or a batch Redis refuses, is counted as dropped
(`mcpgw_audit_dropped_total`), never retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Protocol, TextIO

from gateway import errors
from gateway.policy.counters import PolicyCounters
from gateway.store.client import Redis, Script, translated
from gateway.store.keys import Keys

log = logging.getLogger("gateway.audit")

# KEYS: the stream. ARGV: maxlen, then one record per entry. A batch is one command (one script
# call packs far less than a pipeline of XADDs: bench/README.md "Policy cost").
_APPEND = """
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', ARGV[i])
end
return #ARGV - 1
"""
QUEUE_SIZE = 10_000
BATCH = 256
LINGER = 0.02  # s a record may wait for others to share its pipeline (the window a SIGKILL can lose)


class Sink(Protocol):
    name: str

    def write(self, line: bytes) -> None:
        """One record, as JSON."""


class StdoutSink:
    name = "stdout"

    def __init__(self, counters: PolicyCounters, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._counters = counters

    def write(self, line: bytes) -> None:
        self._stream.write(line.decode() + "\n")
        self._stream.flush()
        self._counters.audit_written.labels(self.name).inc()


class RedisSink:
    name = "redis"

    def __init__(
        self, redis: Redis, keys: Keys, counters: PolicyCounters, *, maxlen: int, linger: float = LINGER
    ) -> None:
        self._linger = linger
        self._redis = redis
        self._key = keys.audit()
        self._maxlen = maxlen
        self._counters = counters
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        self._append = Script(redis, _APPEND)

    def write(self, line: bytes) -> None:
        try:
            self._queue.put_nowait(line)
        except asyncio.QueueFull:
            self._counters.audit_dropped.labels(self.name).inc()

    async def run(self) -> None:
        """Owned by the supervisor: drains the queue into the stream; on cancel, flushes what is queued."""
        pending: list[bytes] = []  # taken from the queue, not yet handed to a write
        flushing: asyncio.Future[None] | None = None
        try:
            while True:
                pending.append(await self._queue.get())
                await asyncio.sleep(self._linger)  # let a batch gather: one pipeline for many records
                batch, pending = pending, []
                # a batch being written is finished even when the writer is cancelled meanwhile
                flushing = asyncio.ensure_future(self._flush(batch))
                await asyncio.shield(flushing)
        except asyncio.CancelledError:
            if flushing is not None:
                await flushing
            if pending:
                await self._flush(pending)
            while not self._queue.empty():
                await self._flush([])
            raise

    async def _flush(self, first: list[bytes]) -> None:
        batch = first
        while len(batch) < BATCH and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if not batch:
            return
        try:
            with translated():
                await self._append(keys=[self._key], args=[self._maxlen, *batch])
        except errors.StoreError as exc:
            self._counters.audit_dropped.labels(self.name).inc(len(batch))
            log.error("audit: %d record(s) dropped: %s", len(batch), exc)
            return
        self._counters.audit_written.labels(self.name).inc(len(batch))
