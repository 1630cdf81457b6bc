"""The load balancer never runs a POST twice: real HAProxy, both configurations the project ships.

A replica that reads a POST and dies before answering has (maybe) forwarded the JSON-RPC call
upstream already; replaying the POST on another replica would run the tool twice (chaos.py saw
the progress notifications of both runs arrive on one stream). Only a connection that never
reached a replica may be retried. Checked for the test topology's config (procs.haproxy_config)
and for deploy/compose/haproxy.cfg, rewritten to local ports. With real replicas, a replayed POST is
harmless anyway: the gateway claims each request id and never forwards a repeat (both
`retry-on conn-failure` and `retry-on empty-response` run the call upstream once).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.store.keys import Keys
from tests.integration.careful_client import CarefulClient
from tests.integration.conftest import StartGateways, StartSdkUpstream
from tests.integration.procs import REPO_ROOT, ProcessGroup, free_port, haproxy_binary, haproxy_config

DEPLOY_CFG = REPO_ROOT / "deploy" / "compose" / "haproxy.cfg"
POSTS = 12


class Backend:
    """A replica stand-in: answers health checks; answers POSTs, or reads them and hangs up."""

    def __init__(self, *, drops_posts: bool) -> None:
        self.drops_posts = drops_posts
        self.posts: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            if head.startswith(b"POST"):
                self.posts[body.decode()] += 1
                if self.drops_posts:
                    return  # read it, then die without a byte of answer (a SIGKILLed replica)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def backend(drops_posts: bool) -> AsyncIterator[tuple[Backend, int]]:
    state = Backend(drops_posts=drops_posts)
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield state, port


def harness_cfg(ports: list[int], listen: int) -> str:
    binary = haproxy_binary()
    assert binary is not None, "haproxy is not installed: run scripts/setup"
    return haproxy_config([("127.0.0.1", p) for p in ports], listen)


def deploy_cfg(ports: list[int], listen: int) -> str:
    text = DEPLOY_CFG.read_text().replace("bind :8080", f"bind 127.0.0.1:{listen}")
    text = re.sub(r"maxconn \d+", "maxconn 1000", text)  # 20,000 needs more file descriptors than here
    text = text.replace("resolvers docker init-addr last,libc,none", "")  # no Docker DNS here
    for number, port in enumerate(ports, start=1):
        text = text.replace(f"gateway{number}:8080", f"127.0.0.1:{port}")
    assert not re.search(r"gateway\d:8080", text), text
    return text


async def post_in_one_write(port: int, body: str) -> str:
    """POST with headers and body in one segment: HAProxy can only replay a request it holds whole
    (clients that write headers and body apart hide the hazard most of the time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"POST /mcp HTTP/1.1\r\nhost: lb\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        writer.write((head + body).encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    return answer.split(b" ", 2)[1].decode() if answer else "disconnected"


@pytest.mark.parametrize("make_cfg", [harness_cfg, deploy_cfg], ids=["test-topology", "deploy-compose"])
async def test_post_read_by_a_dying_replica_is_not_replayed(
    procs: ProcessGroup, tmp_path: Path, make_cfg: Callable[[list[int], int], str]
) -> None:
    binary = haproxy_binary()
    if binary is None:
        pytest.fail("haproxy is not installed: run scripts/setup (it apt-installs haproxy)")
    refused = free_port()  # nothing listens there: a replica that is down (connection refused)
    async with backend(drops_posts=True) as (dying, dying_port), backend(drops_posts=False) as (alive, alive_port):
        # The deploy config has three servers: the dying replica, a live one and a dead port.
        ports = [dying_port, alive_port, refused]
        listen = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(make_cfg(ports, listen))
        argv = [binary, "-c", "-f", str(cfg)]
        check = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        lb = procs.start("haproxy", [binary, "-f", str(cfg), "-db"])
        await asyncio.to_thread(lb.wait_port, listen, 10)  # the backends keep answering health checks
        statuses: Counter[str] = Counter()
        for n in range(POSTS):
            statuses[await post_in_one_write(listen, f"call-{n}")] += 1
    seen = dying.posts + alive.posts
    # Every POST reached exactly one replica: none was lost to the refused port (that connection
    # never reached a replica and was retried elsewhere), none was run a second time.
    assert sorted(seen) == sorted(f"call-{n}" for n in range(POSTS)), seen
    assert set(seen.values()) == {1}, f"a POST was replayed: {seen}"
    # The dying replica's POSTs failed visibly (502 or a closed connection); the live one's were answered.
    assert dying.posts and alive.posts
    assert statuses["200"] == sum(alive.posts.values()), statuses
    assert statuses["502"] + statuses["disconnected"] == sum(dying.posts.values()), statuses


# ---------------------------------------------------------------- real replicas, both retry configurations

RETRY_CONFIGS = {"conn-failure": "retry-on conn-failure", "empty-response": "retry-on conn-failure empty-response"}


async def raw_post(port: int, headers: dict[str, str], body: bytes) -> tuple[str, bytes]:
    """(status or "disconnected", body) of a POST written in one segment (replayable by HAProxy)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = f"POST /mcp HTTP/1.1\r\nhost: lb\r\n{lines}content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    if not answer:
        return "disconnected", b""
    return answer.split(b" ", 2)[1].decode(), answer.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("retry_on", sorted(RETRY_CONFIGS))
async def test_replica_killed_mid_call_runs_the_call_once(
    procs: ProcessGroup,
    tmp_path: Path,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    key_prefix: str,
    redis: aioredis.Redis,
    retry_on: str,
) -> None:
    """The replica answering a JSON tools/call dies before any byte of its answer: with
    `retry-on empty-response` HAProxy replays the POST on the other replica, which finds the request
    id claimed and never forwards it; the upstream runs the call once in both configurations."""
    binary = haproxy_binary()
    assert binary is not None, "haproxy is not installed: run scripts/setup"
    upstream = sdk_upstream(event_store=False, json_response=True)
    replicas = gateway_cluster(2, {"default": upstream}, key_prefix, extra_args=["--request-timeout", "3"])
    listen = free_port()
    cfg_text = haproxy_config([("127.0.0.1", g.port) for g in replicas], listen).replace(
        "retry-on conn-failure", RETRY_CONFIGS[retry_on]
    )
    assert RETRY_CONFIGS[retry_on] in cfg_text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(cfg_text)
    lb = procs.start("haproxy", [binary, "-f", str(cfg), "-db"])
    await asyncio.to_thread(lb.wait_port, listen, 10)
    await asyncio.sleep(1.0)  # both replicas pass a health check
    async with CarefulClient(f"http://127.0.0.1:{listen}/mcp") as client:
        await client.initialize()
        headers = client.headers()
    message = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "tools/call",
        "params": {"name": "slow_count", "arguments": {"steps": 8, "delay": 0.25, "tag": "killed"}},
    }
    body = json.dumps(message).encode()
    answer = asyncio.ensure_future(raw_post(listen, headers, body))
    claims_key = Keys(key_prefix).requests(str(client.session_id))
    holder = None
    for _ in range(100):  # the claim names the replica running the call
        raw = await redis.hget(claims_key, "r:5")
        if raw is not None:
            holder = int(json.loads(raw)["replica"].split(":")[1])
            break
        await asyncio.sleep(0.02)
    assert holder is not None, "the call was never claimed"
    [victim] = [g for g in replicas if g.proc.pid == holder]
    await asyncio.sleep(0.3)  # the upstream runs the call now
    victim.proc.kill()
    status, payload = await answer
    if retry_on == "empty-response":
        # Replayed on the survivor: no answer can be recovered (it died with the first replica),
        # so the repeat gets a JSON-RPC error naming the unknown outcome, never a second run.
        assert status == "504", (status, payload)
        error = json.loads(payload)
        assert error["id"] == 5 and error["error"]["code"] == -32000, error
    else:
        assert status in ("502", "disconnected"), (status, payload)
    for _ in range(100):  # the upstream finishes the one run it started
        if (await executions(upstream)).get("killed") and await finished(upstream):
            break
        await asyncio.sleep(0.1)
    assert await executions(upstream) == {"killed": 1}


async def executions(upstream: str) -> dict[str, int]:
    async with httpx.AsyncClient() as http:
        data: dict[str, int] = (await http.get(upstream.removesuffix("/mcp") + "/executions")).json()
        return data


async def finished(upstream: str) -> bool:
    async with httpx.AsyncClient() as http:
        stats = (await http.get(upstream.removesuffix("/mcp") + "/stats")).json()
        return bool(stats["finished"] + stats["cancelled"] >= stats["started"])
