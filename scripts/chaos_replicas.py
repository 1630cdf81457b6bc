"""The processes of one chaos mode: an SDK upstream, N gateway replicas on the chosen store, and
HAProxy round robin in front of them (scripts/chaos.py runs the trials against them)."""

from __future__ import annotations

import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.chaos_stores import OwnRedis, Store
from tests.integration.procs import Proc, ProcessGroup, ProcessStartError, free_port, haproxy_binary, haproxy_config

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mode:
    name: str
    event_store: bool = True
    signal: int = signal.SIGKILL
    replay: bool = False
    redis_restart: bool = False
    retry_on: str = "conn-failure"
    drop: bool = False  # no kill: the client drops its stream and resumes elsewhere


MODES = {
    m.name: m
    for m in (
        Mode("sigkill"),
        Mode("sigkill-no-store", event_store=False),
        Mode("sigterm", signal=signal.SIGTERM),
        Mode("sigterm-no-store", event_store=False, signal=signal.SIGTERM),
        Mode("replay-lb", replay=True, retry_on="conn-failure empty-response"),
        Mode("redis-restart", redis_restart=True),
        Mode("drop", event_store=False, drop=True),
    )
}


class Cluster:
    def __init__(self, procs: ProcessGroup, mode: Mode, replicas: int, store: Store, log_level: str) -> None:
        self.procs = procs
        self.mode = mode
        self.log_level = log_level
        self.store_args = store.gateway_args
        self.store_name = store.name
        self.prefix = f"mcpgw-chaos-{uuid.uuid4().hex[:8]}"
        self.upstream_port = free_port()
        self.ports = [free_port() for _ in range(replicas)]
        self.gateways: dict[int, Proc] = {}
        self.metrics_ports: dict[int, int] = {}
        self.own_redis: OwnRedis | None = None
        self.logs: list[Path] = []  # of every replica started, restarted ones too
        self.broken: set[int] = set()  # pids chaos killed or stopped

    def start(self) -> str:
        """Start everything; returns the load balancer's /mcp URL."""
        if self.mode.redis_restart:
            self.own_redis = OwnRedis(self.procs)
            self.own_redis.start()
            self.store_args = ("--redis-url", self.own_redis.url)
        argv = [sys.executable, str(REPO / "tests/servers/sdk_server.py"), "--port", str(self.upstream_port)]
        if self.mode.event_store:
            argv.append("--event-store")
        self.procs.start("upstream", argv).wait_http(f"http://127.0.0.1:{self.upstream_port}/healthz", 20)
        for port in self.ports:
            self.start_gateway(port)
        return self.start_lb()

    def start_gateway(self, port: int) -> None:
        argv = [sys.executable, "-m", "gateway", "--port", str(port), *self.store_args]
        argv += ["--upstream", f"default=http://127.0.0.1:{self.upstream_port}/mcp"]
        argv += ["--retry-ms", "200", "--request-timeout", "5", "--drain-timeout", "5"]
        argv += ["--log-format", "text", "--log-level", self.log_level]
        # one load generator on one address is not a flood: the per-client limits off
        argv += ["--rate-limit", "0", "--max-sessions-per-client", "0", "--max-streams-per-client", "0"]
        metrics_port = self.metrics_ports.setdefault(port, free_port())  # /metrics has a listener of its own
        argv += ["--max-connections-per-client", "0", "--metrics-port", str(metrics_port)]
        for attempt in range(3):  # a shared machine: another process may hold the port for a moment
            proc = self.procs.start(f"gateway-{port}", argv, env={"MCPGW_KEY_PREFIX": self.prefix})
            self.logs.append(proc.log_path)
            try:
                proc.wait_http(f"http://127.0.0.1:{port}/healthz", 20)
                break
            except ProcessStartError:
                proc.stop()
                if attempt == 2:
                    raise
                time.sleep(1.0)
        self.gateways[port] = proc

    def start_lb(self) -> str:
        binary = haproxy_binary()
        if binary is None:
            raise ProcessStartError("haproxy is not installed: run scripts/setup")
        listen = free_port()
        text = haproxy_config([("127.0.0.1", p) for p in self.ports], listen)
        text = text.replace("retry-on conn-failure", f"retry-on {self.mode.retry_on}")
        cfg = self.procs.log_dir / f"haproxy-{listen}.cfg"
        cfg.write_text(text)
        self.procs.start(f"haproxy-{listen}", [binary, "-f", str(cfg), "-db"]).wait_port(listen, 10)
        return f"http://127.0.0.1:{listen}/mcp"

    def port_of(self, pid: int) -> int | None:
        return next((port for port, proc in self.gateways.items() if proc.pid == pid), None)

    async def takeovers_counted(self) -> int:
        """mcpgw_takeovers_total summed over the replicas running now (all of them, if none restarted)."""
        total = 0.0
        async with httpx.AsyncClient(timeout=5) as http:
            for port in self.gateways:
                text = (await http.get(f"http://127.0.0.1:{self.metrics_ports[port]}/metrics")).text
                total += sum(
                    float(line.split()[-1]) for line in text.splitlines() if line.startswith("mcpgw_takeovers_total{")
                )
        return int(total)

    async def executions(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as http:
            data: dict[str, int] = (await http.get(f"http://127.0.0.1:{self.upstream_port}/executions")).json()
            return data
