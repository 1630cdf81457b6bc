"""The processes of one benchmark run: upstreams, nginx, gateway replicas, HAProxy; CPU/RSS probes.

Everything runs on this machine as child processes (own process groups, logs under
bench/results/logs/); `Topology.stop()` stops them all.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.procs import Proc, ProcessGroup, free_port, start_haproxy

# The load comes from one address and holds thousands of connections: the connection caps guard a
# replica on the open internet (docs/hardening.md), not against its own bench. Env vars, not flags:
# a baseline tree that predates them ignores them.
UNCAPPED = {"MCPGW_MAX_CONNECTIONS": "0", "MCPGW_MAX_CONNECTIONS_PER_CLIENT": "0"}

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PY = sys.executable
# One load generator on one address is not a flood: the per-client limits (on by default) off.
NO_CLIENT_LIMITS = ["--rate-limit", "0", "--max-sessions-per-client", "0", "--max-streams-per-client", "0"]
# Replicas share this host: no metrics listener each (an env var: a baseline checkout that predates
# the setting ignores it, where it would refuse an unknown flag).
NO_METRICS_LISTENER = {"MCPGW_METRICS_PORT": "0"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE for this process and its children (root may raise the hard limit)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in ((want, max(want, hard)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, target)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- /proc probes


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its direct children (granian serves from a worker process)."""
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children(pid))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Pids of the direct children of a process (uvicorn's `--workers` processes, granian's worker)."""
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and its direct children."""
    return rss_kb(pid) + sum(rss_kb(child) for child in children(pid))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def system_busy_seconds() -> float:
    """CPU time spent by the whole machine (all cores, everything but idle and iowait), seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


class CpuMeter:
    """CPU% of named processes over a window (100% = one core), and of everything else ("other")."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {k: v for k, v in pids.items() if v}
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._start["bench-client"] = time.process_time()
        self._start["system"] = system_busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        out = {name: round(100 * (cpu_seconds(pid) - self._start[name]) / wall, 1) for name, pid in self.pids.items()}
        out["bench-client"] = round(100 * (time.process_time() - self._start["bench-client"]) / wall, 1)
        out["system"] = round(100 * (system_busy_seconds() - self._start["system"]) / wall, 1)
        return out


# ---------------------------------------------------------------- nginx


NGINX_CONF = """\
daemon off;
master_process off;
worker_rlimit_nofile 65536;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream mcp {{
        server {upstream};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def start_nginx(group: ProcessGroup, upstream_hostport: str, workdir: Path) -> tuple[Proc, int]:
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed: run bench/setup (apt-get install nginx-light)")
    port = free_port()
    d = workdir / f"nginx-{port}"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=d, upstream=upstream_hostport, port=port))
    proc = group.start(f"nginx-{port}", [binary, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")])
    proc.wait_port(port)
    return proc, port


# ---------------------------------------------------------------- the topology


@dataclass
class Gateway:
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Topology:
    redis_url: str
    key_prefix: str
    replicas: int = 3
    with_nginx: bool = True
    with_sdk: bool = True
    with_lb: bool = True
    fast_workers: int = 1  # processes of the fast upstream (one holds at most RLIMIT_NOFILE streams)
    group: ProcessGroup = field(default_factory=lambda: ProcessGroup(log_dir=RESULTS / "logs"))
    fast: Proc | None = None
    fast_port: int = 0
    sdk: Proc | None = None
    sdk_port: int = 0
    nginx: Proc | None = None
    nginx_port: int = 0
    nginx_sdk: Proc | None = None
    nginx_sdk_port: int = 0
    gateways: list[Gateway] = field(default_factory=list)
    lb: Proc | None = None
    lb_port: int = 0
    own_redis: bool = False  # start a private redis-server (exact command counts; nothing else uses it)
    redis: Proc | None = None
    baseline_dir: Path | None = None  # another checkout of the gateway: one more replica, `gw1-base`
    baseline: Gateway | None = None
    with_granian: bool = False  # one more replica of this code served by granian: `gw1-granian`
    granian: Gateway | None = None

    # URLs of each way to reach the upstreams ---------------------------------------------
    def urls(self, upstream: str = "fast") -> dict[str, str]:
        """target name -> MCP endpoint URL for `upstream` ("fast" or "sdk")."""
        path = "/mcp" if upstream == "fast" else "/mcp/sdk"
        port = self.fast_port if upstream == "fast" else self.sdk_port
        out = {"direct": f"http://127.0.0.1:{port}/mcp"}
        nport = self.nginx_port if upstream == "fast" else self.nginx_sdk_port
        if nport:
            out["nginx"] = f"http://127.0.0.1:{nport}/mcp"
        if self.gateways:
            out["gw1"] = f"http://127.0.0.1:{self.gateways[0].port}{path}"
        if self.lb_port:
            out[f"gw{len(self.gateways)}+lb"] = f"http://127.0.0.1:{self.lb_port}{path}"
        return out

    def gateway_argv(self, port: int, extra: list[str] | None = None) -> list[str]:
        argv = [PY, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--upstream", f"default=http://127.0.0.1:{self.fast_port}/mcp"]
        if self.sdk_port:
            argv += ["--upstream", f"sdk=http://127.0.0.1:{self.sdk_port}/mcp"]
        argv += ["--redis-url", self.redis_url, "--key-prefix", self.key_prefix, "--log-level", "warning"]
        argv += ["--log-format", "text", *NO_CLIENT_LIMITS, *(extra or [])]
        return argv

    def start_gateway(self, extra: list[str] | None = None, wait: bool = True, cwd: Path | None = None) -> Gateway:
        port = free_port()
        proc = self.group.start(
            f"gateway-{port}", self.gateway_argv(port, extra), cwd=cwd, env={**UNCAPPED, **NO_METRICS_LISTENER}
        )
        gw = Gateway(port, proc)
        if wait:
            proc.wait_http(f"{gw.base}/readyz", timeout=30)
        return gw

    def start_granian_gateway(self, extra: list[str] | None = None) -> Gateway:
        port = free_port()
        flags = self.gateway_argv(port, extra)[3:]  # without `python -m gateway`
        argv = [str(Path(PY).parent / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", "1", "--loop", "uvloop", "--no-ws", "--factory", "bench.granian_app:app"]
        argv += ["--backlog", "4096", "--backpressure", "65536"]  # default: at most backlog (1024) requests at once
        proc = self.group.start(
            f"gateway-granian-{port}", argv, env={"MCPGW_BENCH_ARGV": shlex.join(flags), **NO_METRICS_LISTENER}
        )
        gw = Gateway(port, proc)
        proc.wait_http(f"{gw.base}/readyz", timeout=30)
        return gw

    def start(self) -> None:
        (RESULTS / "logs").mkdir(parents=True, exist_ok=True)
        if self.own_redis:
            port = free_port()
            self.redis = self.group.start(
                f"redis-{port}",
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            )
            self.redis.wait_port(port)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
        self.fast_port = free_port()
        self.fast = self.group.start(
            f"fast-upstream-{self.fast_port}",
            [PY, "-m", "bench.fast_upstream", "--port", str(self.fast_port), "--workers", str(self.fast_workers)],
        )
        if self.with_sdk:
            self.sdk_port = free_port()
            self.sdk = self.group.start(
                f"sdk-upstream-{self.sdk_port}",
                [PY, str(REPO / "tests" / "servers" / "sdk_server.py"), "--port", str(self.sdk_port), "--event-store"],
            )
        self.fast.wait_http(f"http://127.0.0.1:{self.fast_port}/healthz", timeout=20)
        if self.sdk is not None:
            self.sdk.wait_http(f"http://127.0.0.1:{self.sdk_port}/healthz", timeout=30)
        if self.with_nginx:
            self.nginx, self.nginx_port = start_nginx(self.group, f"127.0.0.1:{self.fast_port}", RESULTS / "logs")
            if self.sdk_port:
                self.nginx_sdk, self.nginx_sdk_port = start_nginx(
                    self.group, f"127.0.0.1:{self.sdk_port}", RESULTS / "logs"
                )
        self.gateways = [self.start_gateway(wait=False) for _ in range(self.replicas)]
        if self.with_granian:
            self.granian = self.start_granian_gateway()
        if self.baseline_dir is not None:  # `python -m gateway` run there imports that tree's code
            self.baseline = self.start_gateway(cwd=self.baseline_dir)
        for gw in self.gateways:
            gw.proc.wait_http(f"{gw.base}/readyz", timeout=30)
        if self.with_lb and self.replicas > 1:
            self.lb, self.lb_port = start_haproxy(self.group, [("127.0.0.1", g.port) for g in self.gateways])
            # HAProxy marks servers up after its first check round.
            time.sleep(1.0)

    def pids(self, upstream: str = "fast") -> dict[str, int]:
        out: dict[str, int] = {}
        up = self.fast if upstream == "fast" else self.sdk
        if up is not None:
            out["upstream"] = up.pid
        ng = self.nginx if upstream == "fast" else self.nginx_sdk
        if ng is not None:
            out["nginx"] = ng.pid
        for i, gw in enumerate(self.gateways):
            out[f"gateway{i + 1}"] = gw.proc.pid
        if self.lb is not None:
            out["haproxy"] = self.lb.pid
        return out

    def redis_pid(self) -> int:
        return self.redis.pid if self.redis is not None else redis_pid()

    def stop(self) -> None:
        self.group.stop_all()


def redis_pid() -> int:
    """The local redis-server's pid (for CPU accounting), or 0."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "redis-server":
                    return int(entry.name)
            except OSError:
                continue
    return 0


def describe_machine() -> dict[str, object]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "mem_gb": round(mem_kb / 1024 / 1024),
        "cpu_model": model,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
    }
