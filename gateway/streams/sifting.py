"""A pump's sifting of what a re-opened upstream connection replays: the decisions are
`wire.belonging`'s; this counts what it drops and says so once per stream in the log."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from gateway.wire import belonging

log = logging.getLogger("gateway.streams.pump")


@dataclass(slots=True)
class ReplaySifter:
    stream: str
    count: Callable[[str], None] | None  # mcpgw_upstream_replay_dropped_total{reason}, per message
    _drops: dict[str, int] | None = None  # dropped until the stream's one log line
    _told: bool = False

    def sift(self, data: str, *, pending: Collection[Any], tokens: Collection[Any] | None) -> str | None:
        """What of one replayed event's data belongs to the stream (None: nothing)."""
        sifted = belonging.sift(data, pending=pending, tokens=tokens)
        for reason in sifted.dropped:
            if self.count is not None:
                self.count(reason)
            if not self._told:
                drops = self._drops = self._drops or {}
                drops[reason] = drops.get(reason, 0) + 1
        return sifted.data

    def tell(self) -> None:
        """Log what was dropped, once per stream: after the first re-opened connection that dropped
        something (a long-lived stream that keeps being re-polled would otherwise log each time)."""
        if self._drops and not self._told:
            self._told = True
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self._drops.items()))
            log.info(
                "stream %s: the upstream's replay carried messages that are not this stream's; dropped %s"
                " (further drops are only counted, in mcpgw_upstream_replay_dropped_total)",
                self.stream,
                counts,
            )
            self._drops = None

    @staticmethod
    def told(sifter: ReplaySifter | None) -> None:
        """`tell` for a pump that may have sifted nothing yet (and so has no sifter)."""
        if sifter is not None:
            sifter.tell()
