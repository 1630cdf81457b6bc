"""Real Redis topologies for the integration tests: a 3-primary Cluster with one replica each, and
a primary + replica watched by three Sentinels. Every process is started through a ProcessGroup
(own process group, log file) and so stopped by pid at teardown; data lives in a temp directory.

Both are tuned to fail over in seconds: `cluster-node-timeout` 1000 ms, Sentinel
`down-after-milliseconds` 1000 ms.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_sync

from gateway.store.client import pubsub as store_pubsub
from tests.integration.procs import Proc, ProcessGroup, ProcessStartError, free_port

# The cluster bus listens on port + 10000, so nodes need ports <= 55535; these stay below the
# ephemeral range with their bus ports (30000-32767) too.
CLUSTER_PORTS = (20000, 22767)
NODE_TIMEOUT_MS = 1000
SENTINEL_MASTER = "mymaster"
_used_cluster_ports: set[int] = set()


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ProcessStartError("redis-server is not installed; run scripts/setup (it apt-installs redis-server)")
    return binary


def redis_cli_binary() -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        raise ProcessStartError("redis-cli is not installed; run scripts/setup (it apt-installs redis-tools)")
    return binary


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A port <= 55535 whose bus port (port + 10000) is free too. Both lie below Linux's ephemeral
    range (32768-60999), so neither collides with `free_port()` nor with outgoing connections."""
    for _ in range(500):
        port = random.randint(CLUSTER_PORTS[0], CLUSTER_PORTS[1])
        if port in _used_cluster_ports or port + 10000 in _used_cluster_ports:
            continue
        if _bindable(port) and _bindable(port + 10000):
            _used_cluster_ports.update((port, port + 10000))
            return port
    raise RuntimeError(f"no free port pair (port, port + 10000) with port in {CLUSTER_PORTS}")


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis_sync.RedisError, OSError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")


def _client(port: int) -> redis_sync.Redis:
    return redis_sync.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, socket_timeout=2)


@dataclass
class RedisNode:
    port: int
    proc: Proc

    def client(self) -> redis_sync.Redis:
        return _client(self.port)

    def kill(self) -> None:
        self.proc.kill()


def start_node(procs: ProcessGroup, workdir: Path, port: int, *args: str) -> RedisNode:
    data = workdir / f"node-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        *args,
    ]
    proc = procs.start(f"redis-{port}", argv)
    proc.wait_port(port, timeout=15)
    return RedisNode(port, proc)


# ---------------------------------------------------------------- Cluster


@dataclass
class LocalCluster:
    nodes: list[RedisNode]

    @property
    def seed_url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def gateway_args(self) -> tuple[str, ...]:
        return ("--redis-url", self.seed_url, "--redis-cluster")

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def roles(self) -> dict[int, tuple[str, str]]:
        """port -> (role, node id) as the first live node sees the cluster ("master"/"slave")."""
        for node in self.nodes:
            if not node.proc.alive():
                continue
            with node.client() as c:
                text = c.execute_command("CLUSTER", "NODES").decode()
            out: dict[int, tuple[str, str]] = {}
            for line in text.splitlines():
                node_id, addr, flags = line.split()[:3]
                port = int(addr.split("@")[0].rsplit(":", 1)[1])
                if "fail" in flags.split(","):
                    continue
                out[port] = ("master" if "master" in flags else "slave", node_id)
            return out
        raise AssertionError("no cluster node is alive")

    def primaries(self) -> list[RedisNode]:
        return [self.node(port) for port, (role, _) in self.roles().items() if role == "master"]

    def primary_for(self, key: str) -> RedisNode:
        live = next(n for n in self.nodes if n.proc.alive())
        with live.client() as c:
            slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return self.node(int(primary[1]))
        raise AssertionError(f"no node serves the slot of {key}")

    def healthy(self) -> bool:
        """Every live node reports cluster_state:ok and three live primaries cover the slots."""
        for node in self.nodes:
            if node.proc.alive():
                with node.client() as c:
                    if c.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
                        return False
        return len(self.primaries()) == 3


def start_cluster(procs: ProcessGroup, workdir: Path) -> LocalCluster:
    ports = [free_cluster_port() for _ in range(6)]
    nodes = [
        start_node(
            procs,
            workdir,
            port,
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(workdir / f"nodes-{port}.conf"),
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
        )
        for port in ports
    ]
    create = subprocess.run(
        [
            redis_cli_binary(),
            "--cluster",
            "create",
            *(f"127.0.0.1:{p}" for p in ports),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if create.returncode != 0:
        raise ProcessStartError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
    cluster = LocalCluster(nodes)
    wait_until("the cluster is ok on every node", cluster.healthy, timeout=30)
    wait_until("every replica is in sync", lambda: _replicas_synced(cluster), timeout=30)
    return cluster


def _replicas_synced(cluster: LocalCluster) -> bool:
    replicas = [port for port, (role, _) in cluster.roles().items() if role == "slave"]
    if len(replicas) != 3:
        return False
    for port in replicas:
        with cluster.node(port).client() as c:
            if c.info("replication").get("master_link_status") != "up":
                return False
    return True


# ---------------------------------------------------------------- Sentinel


@dataclass
class LocalSentinels:
    primary: RedisNode
    replica: RedisNode
    sentinels: list[RedisNode] = field(default_factory=list)

    def gateway_args(self) -> tuple[str, ...]:
        addrs = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return ("--redis-url", "redis://127.0.0.1/0", "--redis-sentinel", addrs)

    def master_port(self) -> int | None:
        """The primary's port as a majority of the live Sentinels report it."""
        answers: list[int] = []
        for s in self.sentinels:
            if s.proc.alive():
                with s.client() as c:
                    addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER)
                answers.append(int(addr[1]))
        best = max(set(answers), key=answers.count) if answers else None
        return best if best is not None and answers.count(best) >= 2 else None

    def ready_for_failover(self) -> bool:
        """Every Sentinel knows the replica (healthy) and both other Sentinels: only then can a
        failover be agreed on (Sentinel learns replicas from INFO on the primary every 10 s)."""
        for s in self.sentinels:
            with s.client() as c:
                replicas = c.execute_command("SENTINEL", "REPLICAS", SENTINEL_MASTER)
                peers = c.execute_command("SENTINEL", "SENTINELS", SENTINEL_MASTER)
            ports = {int(_field(r, "port")) for r in replicas if "down" not in _field(r, "flags")}
            if self.replica.port not in ports or len(peers) != 2:
                return False
        with self.replica.client() as c:
            link: object = c.info("replication").get("master_link_status")
            return link == "up"


def _field(info: dict[bytes, bytes], name: str) -> str:
    """A field of one SENTINEL REPLICAS entry (redis-py parses each into a dict)."""
    return info[name.encode()].decode()


def start_sentinels(procs: ProcessGroup, workdir: Path) -> LocalSentinels:
    primary = start_node(procs, workdir, free_port())
    replica = start_node(procs, workdir, free_port(), "--replicaof", "127.0.0.1", str(primary.port))
    setup = LocalSentinels(primary, replica)
    for _ in range(3):
        port = free_port()
        conf = workdir / f"sentinel-{port}.conf"  # Sentinel rewrites its config file: one each
        conf.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {workdir}\n"
            f"sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
            f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
        )
        proc = procs.start(f"sentinel-{port}", [redis_server_binary(), str(conf), "--sentinel"])
        proc.wait_port(port, timeout=15)
        setup.sentinels.append(RedisNode(port, proc))
    wait_until("every Sentinel knows the replica and its two peers", setup.ready_for_failover, timeout=40)
    return setup


async def sharded_pubsub_roundtrip(client: Any, channels: list[str], timeout: float = 10.0) -> set[str]:
    """SSUBSCRIBE to `channels` through `store.client.pubsub`, SPUBLISH one message on each, return
    the channels whose message arrived (the multiplexed tail relies on exactly this)."""
    pubsub = await store_pubsub(client)
    try:
        await pubsub.ssubscribe(*channels)
        for channel in channels:
            await client.spublish(channel, "1")
        got: set[str] = set()
        deadline = time.monotonic() + timeout
        while got != set(channels) and time.monotonic() < deadline:
            # a Cluster's pub/sub reads shard channels from its per-node connections
            message = (
                await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.2)
                if hasattr(pubsub, "get_sharded_message")
                else await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            )
            if message and message["type"] == "smessage":
                got.add(message["channel"].decode())
        return got
    finally:
        await pubsub.aclose()
