"""Progress of a benchmark run on stderr: which step of how many, time so far, time per step.

Why: a full run takes minutes with long silent stretches (idle streams, profiles); a line per
step with its number, the elapsed time and how long the last step took tells whoever watches
that it moves, and the closing summary says where the minutes went.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(self, total: int, *, stream: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._current: tuple[str, float] | None = None
        self.done: list[tuple[str, float]] = []  # (step, seconds) of every finished step

    def _close_current(self) -> str:
        if self._current is None:
            return ""
        name, since = self._current
        seconds = self._clock() - since
        self.done.append((name, seconds))
        self._current = None
        return f"  (last step {seconds:.1f} s)"

    def _print(self, text: str) -> None:
        print(f"[bench {self._clock() - self._started:6.1f} s] {text}", file=self._stream, flush=True)

    def step(self, name: str) -> None:
        """A scenario starts: `[bench   12.3 s] 2/7 2. tools/call -> SSE  (last step 8.1 s)`."""
        last = self._close_current()
        self._current = (name, self._clock())
        self._print(f"{len(self.done) + 1}/{self.total} {name}{last}")

    def note(self, text: str) -> None:
        """A line that is not a counted step (start-up, stopping); ends the current step."""
        self._print(f"{text}{self._close_current()}")

    def summary(self) -> str:
        lines = ["step times:"] + [f"  {seconds:7.1f} s  {name}" for name, seconds in self.done]
        lines.append(f"  {sum(s for _, s in self.done):7.1f} s  all {len(self.done)} of {self.total} steps")
        return "\n".join(lines)
