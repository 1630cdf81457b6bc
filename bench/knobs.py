"""The knobs every benchmark scenario reads: run lengths, connection counts, stream sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Knobs:
    duration: float = 4.0  # seconds per measured run
    conns: tuple[int, ...] = (1, 64)
    use_wrk: bool = True
    sse_events: int = 5
    resume_events: int = 1000
    resume_reps: int = 20
    # Scenario 5 phases: (streams, --keepalive-interval s, idle window s), each on a fresh replica.
    idle_phases: tuple[tuple[int, float, float], ...] = ((5000, 15.0, 5.0), (2000, 15.0, 5.0), (1000, 1.0, 10.0))
    client_streams: int = 64
    client_events: int = 200
    client_rounds: int = 4
    sessions_per_target: int = 64
    reqpath_rounds: int = 3  # scenario 7: rounds of every target, medians reported
    workdir: Path = Path(".")
