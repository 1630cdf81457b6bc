"""A new stream that is not in the store yet: its pump's first write creates it (`EventLog.open`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gateway import errors
from gateway.store.sessions import Registration


@dataclass(frozen=True)
class Opening:
    """A new stream, created by its pump's first write with what the upstream sent already (one
    round trip, not a create then an append: `EventLog.open`); `done` tells its request."""

    trace: str
    registration: Registration | None
    done: asyncio.Future[None]

    def failed(self, exc: BaseException) -> None:
        if not self.done.done():  # (a cancelled pump: its request gets a store error, not a cancellation)
            self.done.set_exception(exc if isinstance(exc, Exception) else errors.StoreError("interrupted"))
            self.done.exception()  # retrieved: no warning when its request has gone meanwhile
