"""A tiny run of scripts/chaos.py so the chaos tool cannot rot (the real run uses --trials 100)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_chaos_script_two_trials(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "chaos.py"), "--trials", "2", "--seed", "3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["trials"] == 2
    assert summary.get("lost", 0) == summary.get("dup", 0) == summary.get("hung", 0) == 0
    assert summary.get("ok", 0) + summary.get("errored", 0) + summary.get("refused", 0) == 2
