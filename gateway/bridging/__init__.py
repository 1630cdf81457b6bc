"""Era bridging: a client of one protocol era in front of an upstream instance of the other.

`eras.py` finds each instance's era (probed once, kept in Redis); `onto_2025/` serves 2026-07-28
clients from 2025-only instances (`onto_2026/`: the other direction).
"""
