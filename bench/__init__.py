"""Benchmark suite of mcp-gateway: `bench/run` or `.venv/bin/python -m bench` (see bench/README.md)."""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parent.parent)
if _REPO not in sys.path:  # the suite reuses tests/integration/procs.py (process helpers, HAProxy)
    sys.path.insert(0, _REPO)
