"""Bench progress lines: step k of n, elapsed time, the last step's time, and a closing summary."""

from __future__ import annotations

import io

from bench.progress import Progress


def test_steps_are_counted_and_timed() -> None:
    now = [100.0]
    out = io.StringIO()
    progress = Progress(3, stream=out, clock=lambda: now[0])
    progress.note("starting")
    progress.step("1. json")
    now[0] += 8.0
    progress.step("2. sse")
    now[0] += 2.5
    progress.note("stopping")
    lines = out.getvalue().splitlines()
    assert lines == [
        "[bench    0.0 s] starting",
        "[bench    0.0 s] 1/3 1. json",
        "[bench    8.0 s] 2/3 2. sse  (last step 8.0 s)",
        "[bench   10.5 s] stopping  (last step 2.5 s)",
    ]
    assert progress.done == [("1. json", 8.0), ("2. sse", 2.5)]
    assert progress.summary().splitlines()[-1] == "     10.5 s  all 2 of 3 steps"
