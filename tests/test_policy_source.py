"""The policy file: a bad one stops the start, a changed one is taken, a bad change is refused."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import ConfigError
from gateway.policy.counters import PolicyCounters
from gateway.policy.source import PolicySource
from tests.test_policy import ctx


def counters() -> tuple[PolicyCounters, CollectorRegistry]:
    registry = CollectorRegistry()
    return PolicyCounters(registry), registry


def write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump * 1_000_000_000))  # a distinct mtime


def test_bad_file_at_start_up_raises(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allow: ['jwt.sub ==']")
    with pytest.raises(ConfigError, match="does not compile"):
        PolicySource(str(path), counters()[0])
    with pytest.raises(ConfigError, match="cannot read"):
        PolicySource(str(tmp_path / "missing.yaml"), counters()[0])


def test_changes_are_taken_and_bad_changes_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("allow: ['jwt.sub == \"alice\"']")
    found, registry = counters()
    source = PolicySource(str(path), found)
    assert source.check() is False  # unchanged
    assert source.current.decide(ctx(claims={"sub": "bob"})).result == "deny"
    write(path, "allow: ['jwt.sub == \"bob\"']", 1)
    assert source.check() is True
    assert source.current.decide(ctx(claims={"sub": "bob"})).result == "allow"
    with caplog.at_level(logging.ERROR, logger="gateway.policy"):
        write(path, "allow: [nosuch == 1]", 2)
        assert source.check() is False
    assert "refused" in caplog.text and "undeclared reference" in caplog.text
    assert source.current.decide(ctx(claims={"sub": "bob"})).result == "allow"  # the previous one stays
    assert registry.get_sample_value("mcpgw_policy_reloads_total", {"result": "refused"}) == 1
    assert registry.get_sample_value("mcpgw_policy_reloads_total", {"result": "loaded"}) == 2
    # replaced by rename (how editors and ConfigMaps swap files)
    fresh = tmp_path / "next.yaml"
    fresh.write_text("deny: ['true']")
    fresh.replace(path)
    assert source.check() is True
    assert source.current.decide(ctx()).result == "deny"


BLOCK_CEL = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cel_expr_python":
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
from gateway.cli import main
main(sys.argv[1:])
"""


def run_gateway(*argv: str, block_cel: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    command = [sys.executable, "-c", BLOCK_CEL] if block_cel else [sys.executable, "-m", "gateway"]
    args = ["--upstream", "default=http://127.0.0.1:9/mcp", *argv]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_the_cli_exits_2_on_a_bad_policy_or_a_missing_extra(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("deny: ['mcp.tool.name ==']")
    done = run_gateway("--policy", str(bad))
    assert done.returncode == 2 and "does not compile" in done.stderr
    good = tmp_path / "good.yaml"
    good.write_text("deny: ['false']")
    done = run_gateway("--policy", str(good), block_cel=True)
    assert done.returncode == 2 and "pip install 'mcp-session-gateway[policy]'" in done.stderr
    done = run_gateway("--audit", "kafka")
    assert done.returncode == 2 and "unknown audit sink" in done.stderr
