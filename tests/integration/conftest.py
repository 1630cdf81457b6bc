"""Fixtures for real-process integration tests: Redis, upstream MCP servers, gateways, HAProxy.

Missing prerequisites fail loudly (never skip): run `scripts/setup` first.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from tests.integration.procs import (
    REPO_ROOT,
    Proc,
    ProcessGroup,
    ProcessStartError,
    free_port,
    start_everything,
    start_haproxy,
)
from tests.integration.redis_topologies import LocalCluster, LocalSentinels, start_cluster, start_sentinels

SDK_SERVER = REPO_ROOT / "tests" / "servers" / "sdk_server.py"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_url() -> str:
    return os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.integration)


# `redis_url`, `key_prefix` and the hard Redis check come from tests/conftest.py.


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    """Registry of started processes; everything is stopped at teardown.

    Logs: .pytest_cache/integration-logs/<test name>/ (failed starts quote the last 50 lines)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)[:80]
    log_dir = REPO_ROOT / ".pytest_cache" / "integration-logs" / safe
    shutil.rmtree(log_dir, ignore_errors=True)  # keep only the latest run's logs per test
    group = ProcessGroup(log_dir=log_dir)
    try:
        yield group
    finally:
        group.stop_all()


# ---------------------------------------------------------------- Redis topologies


@pytest.fixture
def redis_cluster(procs: ProcessGroup, tmp_path: Path) -> LocalCluster:
    """A 3-primary Redis Cluster with one replica each (six `redis-server --cluster-enabled yes`)."""
    try:
        return start_cluster(procs, tmp_path / "cluster")
    except ProcessStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def redis_sentinels(procs: ProcessGroup, tmp_path: Path) -> LocalSentinels:
    """A primary, its replica and three Sentinels that all know both (ready to fail over)."""
    try:
        return start_sentinels(procs, tmp_path / "sentinel")
    except ProcessStartError as exc:
        pytest.fail(str(exc), pytrace=False)


# ---------------------------------------------------------------- upstreams


class StartSdkUpstream(Protocol):
    def __call__(
        self,
        event_store: bool = True,
        json_response: bool = False,
        name: str = "u1",
        *,
        stateless: bool = False,
        retry_interval: int | None = None,
    ) -> str: ...


@dataclass
class Upstream:
    name: str
    url: str
    port: int
    proc: Proc


@pytest.fixture
def sdk_upstreams() -> list[Upstream]:
    """Every upstream started by `sdk_upstream` in this test (to kill one, find its proc here)."""
    return []


@pytest.fixture
def sdk_upstream(procs: ProcessGroup, sdk_upstreams: list[Upstream]) -> StartSdkUpstream:
    """Factory: start `tests/servers/sdk_server.py`; returns `http://127.0.0.1:PORT/mcp`."""

    def start(
        event_store: bool = True,
        json_response: bool = False,
        name: str = "u1",
        *,
        stateless: bool = False,
        retry_interval: int | None = None,
    ) -> str:
        port = free_port()
        argv = [sys.executable, str(SDK_SERVER), "--port", str(port), "--name", name]
        if event_store:
            argv.append("--event-store")
        if json_response:
            argv.append("--json-response")
        if stateless:
            argv.append("--stateless")
        if retry_interval is not None:
            argv += ["--retry-interval", str(retry_interval)]
        proc = procs.start(f"sdk-{name}-{port}", argv)
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
        url = f"http://127.0.0.1:{port}/mcp"
        sdk_upstreams.append(Upstream(name, url, port, proc))
        return url

    return start


@pytest.fixture
def everything_upstream(procs: ProcessGroup) -> str:
    """`@modelcontextprotocol/server-everything streamableHttp` on a free port; returns its /mcp URL."""
    try:
        return start_everything(procs)
    except ProcessStartError as exc:
        pytest.fail(str(exc), pytrace=False)


# ---------------------------------------------------------------- gateways


@dataclass
class GatewayProc:
    url: str
    port: int
    proc: Proc
    metrics_port: int = 0  # its metrics listener (issue 35: /metrics is not on the MCP port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


class StartGateways(Protocol):
    def __call__(
        self,
        n: int,
        upstreams: Mapping[str, str | Sequence[str]],
        key_prefix: str,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[GatewayProc]: ...


def gateway_argv(
    port: int,
    upstreams: Mapping[str, str | Sequence[str]],
    redis_url: str,
    extra_args: Sequence[str] = (),
    metrics_port: int = 0,
) -> list[str]:
    argv = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--metrics-port", str(metrics_port)]  # replicas share this host: 0 or a free port each
    for name, urls in upstreams.items():
        joined = urls if isinstance(urls, str) else ",".join(urls)
        argv += ["--upstream", f"{name}={joined}"]
    argv += ["--redis-url", redis_url, *extra_args]
    return argv


@pytest.fixture
def gateway_cluster(procs: ProcessGroup, redis_url: str) -> StartGateways:
    """Factory: start `n` gateway replicas sharing Redis; waits for `GET /healthz` -> 200 on each."""

    def start(
        n: int,
        upstreams: Mapping[str, str | Sequence[str]],
        key_prefix: str,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> list[GatewayProc]:
        gateways: list[GatewayProc] = []
        for _ in range(n):
            port, metrics_port = free_port(), free_port()
            argv = gateway_argv(port, upstreams, redis_url, extra_args, metrics_port)
            proc = procs.start(f"gateway-{port}", argv, env={"MCPGW_KEY_PREFIX": key_prefix, **(env or {})})
            gateways.append(GatewayProc(f"http://127.0.0.1:{port}/mcp", port, proc, metrics_port))
        for gw in gateways:
            gw.proc.wait_http(f"{gw.base_url}/healthz", timeout=20)
        return gateways

    return start


class StartLoadBalancer(Protocol):
    def __call__(self, backends: Sequence[GatewayProc | tuple[str, int] | int]) -> str: ...


@pytest.fixture
def load_balancer(procs: ProcessGroup) -> StartLoadBalancer:
    """Factory: HAProxy round-robin (no stickiness) over `backends`; returns `http://127.0.0.1:P/mcp`.

    Backends may be GatewayProcs, (host, port) pairs or bare ports; each must serve GET /healthz.
    """

    def start(backends: Sequence[GatewayProc | tuple[str, int] | int]) -> str:
        pairs: list[tuple[str, int]] = []
        for b in backends:
            if isinstance(b, GatewayProc):
                pairs.append(("127.0.0.1", b.port))
            elif isinstance(b, int):
                pairs.append(("127.0.0.1", b))
            else:
                pairs.append(b)
        try:
            _, port = start_haproxy(procs, pairs)
        except Exception as exc:
            pytest.fail(str(exc), pytrace=False)
        return f"http://127.0.0.1:{port}/mcp"

    return start
