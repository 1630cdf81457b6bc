"""The store topologies chaos runs on, and how it tells a wrongful takeover from a right one.

`--store single` uses the shared Redis (REDIS_URL, default 127.0.0.1:6379) under a key prefix of
its own; `sentinel` and `cluster` start their own processes on free ports (a primary, its replica
and three Sentinels; a 3-primary Cluster with one replica each: tests/integration/
redis_topologies.py), so 6379 is never touched. A takeover is right when its previous holder is a
replica chaos broke; any other is wrongful (a live, beating replica judged dead).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tests.integration.procs import Proc, ProcessGroup, ProcessStartError, free_port
from tests.integration.redis_topologies import start_cluster, start_sentinels

STORES = ("single", "sentinel", "cluster")
# gateway/streams/relay.py's line for each takeover (warning level, a drain's handover at info)
TAKEOVER_LINE = re.compile(r"pump (\S+) is gone, taking over .*?; reason (\w+): (.*)$")


@dataclass
class Store:
    """Where the replicas keep their state: their arguments for it, and a client chaos reads with."""

    name: str
    gateway_args: tuple[str, ...]
    url: str  # for the client (a Cluster's seed, a Sentinel set's primary)
    cluster: bool = False
    workdir: Path | None = None

    def client(self) -> Any:
        return RedisCluster.from_url(self.url) if self.cluster else aioredis.from_url(self.url)

    def close(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_store(name: str, procs: ProcessGroup, shared_url: str) -> Store:
    if name == "single":
        return Store(name, ("--redis-url", shared_url), shared_url)
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-"))
    if name == "sentinel":
        sentinels = start_sentinels(procs, workdir)
        url = f"redis://127.0.0.1:{sentinels.primary.port}/0"
        return Store(name, sentinels.gateway_args(), url, workdir=workdir)
    cluster = start_cluster(procs, workdir)
    return Store(name, cluster.gateway_args(), cluster.seed_url, cluster=True, workdir=workdir)


class OwnRedis:
    """A redis-server of chaos's own (free port, no persistence), restartable without touching 6379."""

    def __init__(self, procs: ProcessGroup) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ProcessStartError("redis-server is not installed: run scripts/setup")
        self.binary = binary
        self.procs = procs
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = self.procs.start(f"redis-{self.port}", argv)
        self.proc.wait_port(self.port, 10)

    def restart(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL, by pid: with persistence off, everything it held is gone
        self.start()


@dataclass
class Takeovers:
    """Every takeover the replicas logged, split by whether chaos had broken its previous holder."""

    right: int = 0
    wrongful: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)  # each wrongful one's line


def takeovers(logs: Iterable[Path], broken_pids: set[int]) -> Takeovers:
    found = Takeovers()
    for path in logs:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            match = TAKEOVER_LINE.search(line)
            if match is None:
                continue
            holder, reason = match.group(1), match.group(2)
            found.reasons[reason] = found.reasons.get(reason, 0) + 1
            if _pid(holder) in broken_pids:
                found.right += 1
            else:
                found.wrongful += 1
                found.evidence.append(line.strip())
    return found


def _pid(replica: str) -> int | None:
    """The pid inside a replica id (`host:pid:nonce`)."""
    parts = replica.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
