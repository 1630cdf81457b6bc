"""Static checks of deploy/compose/haproxy.cfg: no stickiness, health checks, SSE timeouts, `haproxy -c`.

`haproxy` must be on PATH (scripts/setup installs it; missing = failure).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy_files import (
    GATEWAY_SERVICES,
    HAPROXY_CFG,
    compose_services,
)

pytestmark = pytest.mark.usefixtures("deploy_files_exist")


def haproxy_lines() -> list[str]:
    lines = []
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    return lines


def haproxy_seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", value)
    assert m, value
    factor = {"us": 1e-6, "ms": 0.001, None: 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(m.group(1)) * factor[m.group(2)]


def test_haproxy_roundrobin_without_stickiness() -> None:
    lines = haproxy_lines()
    assert "balance roundrobin" in lines
    for line in lines:
        word = line.split()[0]
        assert word not in ("cookie", "stick", "stick-table", "appsession", "hash-type"), line
        assert not line.startswith("balance") or line == "balance roundrobin", line
        assert "cookie" not in line.split()[1:], line
    assert "option redispatch" in lines
    retries = [int(line.split()[1]) for line in lines if line.startswith("retries ")]
    assert retries and retries[0] >= 1
    assert "option http-buffer-request" not in lines, "requests must not be buffered"
    assert not any(line.startswith("compression") for line in lines), "SSE must not be compressed"


def test_haproxy_health_check_and_timeouts() -> None:
    lines = haproxy_lines()
    assert "option httpchk" in lines
    assert any(re.fullmatch(r"http-check send meth GET uri /healthz.*", line) for line in lines)
    timeouts = {line.split()[1]: haproxy_seconds(line.split()[2]) for line in lines if line.startswith("timeout ")}
    for name in ("client", "server", "tunnel"):
        assert timeouts[name] >= 3600, f"timeout {name} too short for long-lived SSE"
    # Keep-alive comments come every ~15 s: the idle timeouts must be far above that.
    assert min(timeouts["client"], timeouts["server"]) > 15


def test_haproxy_servers_are_the_gateway_replicas() -> None:
    lines = haproxy_lines()
    servers = [line.split() for line in lines if line.startswith("server ")]
    assert [s[1] for s in servers] == list(GATEWAY_SERVICES)
    for s in servers:
        host, _, port = s[2].rpartition(":")
        assert host == s[1] and port == "8080"
    assert any(line.startswith("default-server") and " check" in f" {line}" for line in lines) or all(
        "check" in s for s in servers
    ), "servers are health-checked"
    binds = [line.split()[1] for line in lines if line.startswith("bind ")]
    assert [b.rpartition(":")[2] for b in binds] == ["8080"]
    lb_ports = compose_services()["lb"]["ports"]
    assert any(str(p).endswith(":8080") for p in lb_ports)


def test_haproxy_config_check(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    if not haproxy:
        pytest.fail("haproxy not on PATH: run scripts/setup")
    text = HAPROXY_CFG.read_text()
    for name in GATEWAY_SERVICES:  # service names only resolve inside the compose network
        text = re.sub(rf"\b{name}:8080\b", "127.0.0.1:8080", text)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    proc = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "ALERT" not in output, output
