"""Tiny runs of scripts/chaos.py so the chaos tool cannot rot (the real run uses --trials 100)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NEW_MODES = ("sigkill-no-store", "sigterm", "sigterm-no-store", "replay-lb", "redis-restart")


def run_chaos(tmp_path: Path, *args: str, timeout: float) -> dict[str, Any]:
    out = tmp_path / "chaos.json"
    argv = [sys.executable, str(REPO / "scripts" / "chaos.py"), *args, "--json", str(out)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO) as chaos:
        try:
            stdout, stderr = chaos.communicate(timeout=timeout)
        except BaseException:  # a timeout, ours or pytest's: SIGTERM lets chaos stop what it started
            chaos.terminate()
            chaos.communicate(timeout=30)
            raise
    result = subprocess.CompletedProcess(argv, chaos.returncode, stdout, stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    line = "lost / duplicated / hung / executed twice / wrongful takeovers: 0 / 0 / 0 / 0 / 0"
    assert line in result.stdout, result.stdout[-2000:]
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def test_chaos_script_two_trials(tmp_path: Path) -> None:
    summary = run_chaos(tmp_path, "--trials", "2", "--seed", "3", timeout=180)
    assert summary["trials"] == 2
    assert summary.get("lost", 0) == summary.get("dup", 0) == summary.get("hung", 0) == 0
    assert summary.get("ok", 0) + summary.get("errored", 0) + summary.get("refused", 0) == 2


@pytest.mark.timeout(600)  # five modes, each its own stack: past the default 120 s on a loaded machine
def test_chaos_new_modes_two_trials_each(tmp_path: Path) -> None:
    summary = run_chaos(tmp_path, "--trials", "2", "--seed", "4", "--modes", ",".join(NEW_MODES), timeout=600)
    assert list(summary["modes"]) == list(NEW_MODES)
    for name, mode in summary["modes"].items():
        assert mode["trials"] == 2, (name, mode)
        assert mode["lost"] == mode["dup"] == mode["hung"] == mode["twice"] == 0, (name, mode)
        # Each trial's call ran upstream at most once (a refused one may not have reached it).
        assert mode["executions"] <= 2, (name, mode)
    # Redis restarted without persistence: every trial finished first, was told of the loss, or was
    # refused visibly (a 503 on a connection the restart broke).
    restart = summary["modes"]["redis-restart"]
    assert restart["ok"] + restart["gap"] + restart["refused"] == 2, restart
    # A replayed POST is attached to the first copy: both copies complete, the tool runs once.
    replay = summary["modes"]["replay-lb"]
    assert replay["ok"] + replay["errored"] + replay["refused"] == 2, replay


@pytest.mark.timeout(300)
def test_chaos_on_its_own_cluster_without_any_kill(tmp_path: Path) -> None:
    """`--store cluster` starts a 3-primary Cluster of chaos's own; `drop` breaks nothing, so every
    trial completes and no stream is taken over (a wrongful takeover would end it in an error)."""
    summary = run_chaos(tmp_path, "--trials", "2", "--seed", "5", "--store", "cluster", "--modes", "drop", timeout=300)
    assert summary["store"] == "cluster"
    drop = summary["modes"]["drop"]
    assert drop["ok"] == drop["resumed_trials"] == 2, drop  # each dropped its stream and resumed
    assert drop["wrongful"] == drop["takeovers"] == drop["takeovers_metric"] == 0, drop
