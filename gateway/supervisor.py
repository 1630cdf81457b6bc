"""An owner for background tasks: every task is tracked, cancelled and awaited on close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("gateway.supervisor")


class Supervisor:
    """Owns fire-and-forget work (pumps, health checks); `aclose` cancels and awaits it all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        if self._closed:
            coro.close()
            raise RuntimeError("supervisor is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float) -> None:
        """Give running tasks up to `timeout` seconds to finish on their own."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def aclose(self) -> None:
        self._closed = True
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def cancelling() -> bool:
    """True when the current task was asked to stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def checkpoint() -> None:
    """Raise CancelledError if the current task was asked to stop. Long-lived loops call this each
    round: a client library may swallow a cancellation that lands inside its call (redis-py can turn
    it into its own error, or finish the call), and the loop would then run on forever."""
    if cancelling():
        raise asyncio.CancelledError()
