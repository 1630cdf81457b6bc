"""Which streams have a client connected on this replica, so a pump can tell it was abandoned.

A standalone GET stream has nothing pending: once its client is gone for a few seconds, its pump
ends it and gives its upstream connection back, instead of holding it for the idle bound while
the next `initialize` waits for a free connection (issue 35). Streams that answer requests are
never ended this way (transports: disconnect is not cancellation).
"""

from __future__ import annotations

from collections.abc import Callable


class Listeners:
    """Client deliveries running on this replica, per (session, stream)."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count: dict[tuple[str, str], int] = {}

    def enter(self, key: tuple[str, str]) -> None:
        self._count[key] = self._count.get(key, 0) + 1

    def leave(self, key: tuple[str, str]) -> None:
        left = self._count.pop(key, 1) - 1
        if left > 0:
            self._count[key] = left

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._count

    def detachment(self, key: tuple[str, str], kind: str, after: float) -> Detachment | None:
        """What a new pump of `key` watches: a standalone ("get") stream only, when `after` > 0."""
        return Detachment(lambda: key in self._count, after) if kind == "get" and after > 0 else None


class Detachment:
    """One pump's view: has its stream had no client here for `after` seconds?"""

    __slots__ = ("_attached", "_since", "after")

    def __init__(self, attached: Callable[[], bool], after: float) -> None:
        self._attached = attached
        self.after = after
        self._since = 0.0  # when no client was first seen (0: one is connected)

    def abandoned(self, now: float) -> bool:
        if self._attached():
            self._since = 0.0
            return False
        if not self._since:
            self._since = now
        return now - self._since >= self.after
