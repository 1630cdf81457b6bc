"""Real-process helpers for the integration fixtures: ports, subprocesses, HAProxy.

Every child runs in its own session/process group with stdout+stderr in a log file; stopping
signals the whole group by pid, so grandchildren (npm shims, uvicorn workers) go too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOG_DIR = REPO_ROOT / ".pytest_cache" / "integration-logs"


class ProcessStartError(RuntimeError):
    """A child exited or never became ready; the message carries the tail of its log."""


_allocated_ports: set[int] = set()


def free_port() -> int:
    """An unused 127.0.0.1 TCP port, never handed out twice by this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _allocated_ports:
            _allocated_ports.add(port)
            return port
    raise RuntimeError("could not find a free port")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 50) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Proc:
    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 50) -> str:
        return tail(self.log_path, lines)

    def _fail(self, what: str) -> ProcessStartError:
        rc = self.popen.poll()
        state = "still running" if rc is None else f"exited with {rc}"
        return ProcessStartError(
            f"{self.name} {what} ({state}); argv={self.argv!r}\n"
            f"--- last 50 lines of {self.log_path} ---\n{self.log_tail(50)}"
        )

    def wait_port(self, port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self._fail(f"died before listening on {host}:{port}")
            if port_open(port, host):
                return
            time.sleep(0.05)
        raise self._fail(f"did not listen on {host}:{port} within {timeout}s")

    def wait_http(self, url: str, timeout: float = 15.0, expect_status: int = 200) -> None:
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if not self.alive():
                raise self._fail(f"died before {url} answered")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == expect_status:
                        return
                    last = f"status {resp.status}"
            except urllib.error.HTTPError as exc:
                if exc.code == expect_status:
                    return
                last = f"status {exc.code}"
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise self._fail(f"{url} did not answer {expect_status} within {timeout}s (last: {last})")

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole process group (default SIGKILL) and, if fatal, reap it."""
        self.signal_group(sig)
        if sig == signal.SIGKILL:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)

    def terminate(self) -> None:
        """SIGTERM to the group, without waiting."""
        self.signal_group(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the group, SIGKILL it after `timeout`; always reaps and closes the log."""
        try:
            if self.alive():
                self.signal_group(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=timeout)
            # Leftover group members (or a stuck leader) get SIGKILL.
            self.signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


def start_process(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start `argv` in a new session (own process group); `env` is layered over os.environ."""
    log_dir = log_dir or DEFAULT_LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    log_path = log_dir / f"{safe}-{time.strftime('%H%M%S')}-{os.getpid()}-{free_port()}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed by Proc.stop()
    try:
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd or REPO_ROOT),
            start_new_session=True,
        )
    except OSError as exc:
        log_file.close()
        raise ProcessStartError(f"{name}: cannot exec {argv!r}: {exc}") from exc
    return Proc(name=name, argv=list(argv), popen=popen, log_path=log_path, _log_file=log_file)


@dataclass
class ProcessGroup:
    """Registry of started processes; `stop_all()` (fixture teardown) stops them newest-first."""

    log_dir: Path = DEFAULT_LOG_DIR
    procs: list[Proc] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> Proc:
        proc = start_process(name, argv, env=env, log_dir=self.log_dir, cwd=cwd)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except BaseException as exc:  # keep stopping the rest
                errors.append(exc)
        self.procs.clear()
        if errors:
            raise errors[0]


# ---------------------------------------------------------------- HAProxy


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )


def haproxy_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def haproxy_config(
    backends: list[tuple[str, int]],
    listen_port: int,
    *,
    version: tuple[int, int] | None = None,
    health_path: str = "/healthz",
) -> str:
    """Round robin, no stickiness, per-request balancing, SSE-safe (no request buffering)."""
    if version is None:
        binary = haproxy_binary()
        version = haproxy_version(binary) if binary else (0, 0)
    # As deploy/compose/haproxy.cfg: retry only when the connection never reached a replica. With
    # `empty-response` a POST read by a replica that is then killed runs again on another one: the
    # upstream executes the call twice (chaos.py saw its progress notifications arrive twice).
    retry_on = "    retry-on conn-failure\n" if version >= (2, 0) else ""
    servers = "\n".join(
        f"    server b{i} {host}:{port} check inter 500ms fall 2 rise 1" for i, (host, port) in enumerate(backends)
    )
    return f"""global
    maxconn 4096

defaults
    mode http
    log stdout format raw local0
    option httplog
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 10s
    timeout http-keep-alive 1s

frontend fe
    bind 127.0.0.1:{listen_port}
    default_backend be

backend be
    balance roundrobin
    option http-server-close
    no option http-buffer-request
    option redispatch
    retries 3
{retry_on}    option httpchk GET {health_path}
    http-check expect status 200
{servers}
"""


def start_haproxy(
    group: ProcessGroup, backends: list[tuple[str, int]], listen_port: int | None = None, timeout: float = 10.0
) -> tuple[Proc, int]:
    """Start `haproxy -f cfg -db` in the foreground; returns (proc, listen_port) once it listens."""
    binary = haproxy_binary()
    if binary is None:
        raise ProcessStartError("haproxy is not installed; run scripts/setup (it apt-installs haproxy)")
    port = listen_port or free_port()
    group.log_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = group.log_dir / f"haproxy-{port}.cfg"
    cfg_path.write_text(haproxy_config(backends, port, version=haproxy_version(binary)))
    check = subprocess.run([binary, "-c", "-f", str(cfg_path)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise ProcessStartError(f"haproxy rejected {cfg_path}:\n{check.stdout}\n{check.stderr}")
    proc = group.start(f"haproxy-{port}", [binary, "-f", str(cfg_path), "-db"])
    proc.wait_port(port, timeout=timeout)
    return proc, port


EVERYTHING_BIN = REPO_ROOT / "tests" / "js" / "node_modules" / ".bin" / "mcp-server-everything"


def start_everything(group: ProcessGroup, timeout: float = 30.0) -> str:
    """`@modelcontextprotocol/server-everything streamableHttp` on a free port; returns its /mcp URL."""
    if not EVERYTHING_BIN.exists():
        raise ProcessStartError(f"{EVERYTHING_BIN} is missing: run scripts/setup (npm install in tests/js)")
    port = free_port()
    proc = group.start(f"everything-{port}", [str(EVERYTHING_BIN), "streamableHttp"], env={"PORT": str(port)})
    proc.wait_port(port, timeout=timeout)
    return f"http://127.0.0.1:{port}/mcp"
