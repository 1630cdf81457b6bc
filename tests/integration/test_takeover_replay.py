"""What a takeover relays (docs/takeovers.md): server-everything behind three replicas and HAProxy.

server-everything's event store replays, after a Last-Event-ID, every later event of the whole
*session*, whichever stream it belonged to, and its own `{}` resume markers. With its simulated
logging on (events on the standalone GET stream) and a long call sending progress, the replica
pumping the GET stream and the one pumping the call are SIGKILLed: the replicas that take the
streams over re-open them upstream and get the other stream's events back. Each real client must
see every progress notification exactly once, no answer for an id it does not wait for, and no
event that is not a JSON-RPC message; the dropped counter shows the gateway sifted the replays.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from interop import harness
from tests.integration.careful_client import CarefulClient, iter_sse
from tests.integration.clients import call_with_progress, sdk_session
from tests.integration.conftest import GatewayProc, StartGateways, StartLoadBalancer
from tests.integration.test_failover import GW_ARGS, assert_exactly_once, kill_pid

DURATION, STEPS = 15, 30  # a step every 0.5 s: the call outlives both kills and their takeovers
DROPPED = "mcpgw_upstream_replay_dropped_total"


@dataclass(frozen=True)
class Pumped:
    stream: str
    kind: str
    uid: str
    holder: str | None

    @property
    def pid(self) -> int:
        assert self.holder is not None
        return int(self.holder.split(":")[1])


async def streams(client: aioredis.Redis, key_prefix: str, sid: str) -> list[Pumped]:
    found = []
    async for key in client.scan_iter(match=f"{key_prefix}:{{{sid}}}:m:*"):
        assert isinstance(key, bytes)  # a client without decode_responses
        stream = key.decode().rsplit(":m:", 1)[1]
        meta = await client.hgetall(key)
        holder = await client.get(f"{key_prefix}:{{{sid}}}:lease:{stream}")
        kind, uid = meta.get(b"kind", b""), meta.get(b"uid", b"")
        assert isinstance(kind, bytes) and isinstance(uid, bytes) and (holder is None or isinstance(holder, bytes))
        found.append(Pumped(stream, kind.decode(), uid.decode(), holder.decode() if holder else None))
    return found


async def until(what: str, check: Any, timeout: float = 20.0) -> Any:
    for _ in range(int(timeout / 0.05)):
        if found := await check():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def kill_both_pumps(redis_url: str, key_prefix: str, sid: str, gateways: list[GatewayProc]) -> set[int]:
    """SIGKILL the replica pumping the GET stream once it logged an upstream event id (so a takeover
    re-opens it upstream), wait for the takeover, then the replica that pumped the call then (if
    another: MCP-NOTES, the SDK client resumes a twice-broken stream from its first id)."""
    client = aioredis.from_url(redis_url)
    try:

        async def ready() -> tuple[Pumped, Pumped] | None:
            found = await streams(client, key_prefix, sid)
            gets = [s for s in found if s.kind == "get" and s.uid and s.holder]
            posts = [s for s in found if s.kind == "post" and s.holder]
            return (gets[0], posts[0]) if gets and posts else None

        get, post = await until("a GET stream with an upstream id and a pumped call", ready)
        killed = {kill_pid(gateways, get.pid).proc.pid}

        async def taken_over() -> bool:
            return any(
                s.stream == get.stream and s.holder not in (None, get.holder)
                for s in await streams(client, key_prefix, sid)
            )

        await until("the GET stream's takeover", taken_over)
        await asyncio.sleep(1.0)  # the new pump re-opened the upstream stream: a replay, then a re-poll
        if post.pid not in killed:  # (never the call's new pump: the SDK client would resume it wrongly)
            killed.add(kill_pid(gateways, post.pid).proc.pid)
        return killed
    finally:
        await client.aclose()


async def dropped(survivors: list[GatewayProc]) -> Counter[str]:
    """mcpgw_upstream_replay_dropped_total by reason, summed over the replicas still alive."""
    total: Counter[str] = Counter()
    async with httpx.AsyncClient() as http:
        for gw in survivors:
            text = (await http.get(gw.metrics_url)).text
            for reason, value in re.findall(rf'^{DROPPED}{{reason="(\w+)"}} (\S+)$', text, re.M):
                total[reason] += int(float(value))
    return total


def stack(start: StartGateways, lb: StartLoadBalancer, upstream: str, key_prefix: str) -> tuple[list[GatewayProc], str]:
    gateways = start(3, {"default": upstream}, key_prefix, GW_ARGS)
    return gateways, lb(gateways)


def assert_sifted(gateways: list[GatewayProc], killed: set[int], counts: Counter[str]) -> None:
    assert len(killed) in (1, 2) and len([g for g in gateways if g.proc.pid not in killed]) >= 1
    # The GET stream's new pump got the call's progress back from the upstream, and dropped it.
    assert counts["foreign_progress"] > 0, counts


@pytest.mark.timeout(180)
async def test_ts_sdk_client_sees_each_progress_once_across_both_takeovers(
    everything_upstream: str,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    harness.require_installed()
    gateways, lb = stack(gateway_cluster, load_balancer, everything_upstream, key_prefix)
    script = str(harness.INTEROP / "takeover_client.mjs")
    node = await asyncio.create_subprocess_exec(
        str(harness.NODE),
        script,
        lb,
        str(DURATION),
        str(STEPS),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=harness.node_env(),
    )
    try:
        assert node.stdout is not None
        first = json.loads(await asyncio.wait_for(node.stdout.readline(), 30))
        killed = await kill_both_pumps(redis_url, key_prefix, first["session"], gateways)
        out, err = await asyncio.wait_for(node.communicate(), DURATION + 90)
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
    lines = out.decode().strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    assert report.get("ok"), f"{out.decode()[-4000:]}\n{err.decode()[-4000:]}"
    assert "Steps: 30" in report["text"], report
    assert_exactly_once(report["progress"], STEPS)
    errors = report["errors"]
    assert not [e for e in errors if "unknown message ID" in e], errors
    assert not [e for e in errors if e.startswith(("ZodError", "SyntaxError", "$ZodError"))], errors
    assert report["resumes"] >= 1 and report["logging"] >= 1, report
    assert_sifted(gateways, killed, await dropped([g for g in gateways if g.proc.pid not in killed]))


@pytest.mark.timeout(180)
async def test_python_sdk_client_sees_each_progress_once_across_both_takeovers(
    everything_upstream: str,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateways, lb = stack(gateway_cluster, load_balancer, everything_upstream, key_prefix)
    received: list[Any] = []

    async def on_message(message: Any) -> None:
        received.append(message)

    caplog.set_level(logging.DEBUG, logger="mcp")
    async with sdk_session(lb, message_handler=on_message) as (session, get_sid):
        await session.call_tool("toggle-simulated-logging", {})
        sid = get_sid()
        assert sid is not None
        call = asyncio.ensure_future(
            call_with_progress(session, "trigger-long-running-operation", {"duration": DURATION, "steps": STEPS})
        )
        killed = await kill_both_pumps(redis_url, key_prefix, sid, gateways)
        result, progress = await asyncio.wait_for(call, DURATION + 60)
        await asyncio.sleep(4.5)  # what a replay still brings arrives within a re-poll or two
    assert not result.is_error and "Steps: 30" in "".join(getattr(c, "text", "") for c in result.content)
    assert_exactly_once([p.progress for p in progress], STEPS)
    assert not [m for m in received if isinstance(m, Exception)], received  # an event it could not parse
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "unknown/late request id" in m or "Error parsing SSE" in m], messages
    assert_sifted(gateways, killed, await dropped([g for g in gateways if g.proc.pid not in killed]))


async def listen(client: CarefulClient, seen: list[Any]) -> None:
    """The standalone GET stream, resumed from the newest id seen (a careful client, unlike the SDK's)."""
    last: str | None = None
    while True:
        headers = client.headers(accept="text/event-stream", last_event_id=last, post=False)
        try:
            async with client.http.stream("GET", client.url, headers=headers) as response:
                async for event in iter_sse(response):
                    last = event.id or last
                    if event.data.strip():
                        seen.append(json.loads(event.data))  # an unparseable event fails the test here
        except (httpx.TransportError, httpx.StreamError):
            pass
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_careful_client_sees_each_progress_once_across_both_takeovers(
    everything_upstream: str,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    gateways, lb = stack(gateway_cluster, load_balancer, everything_upstream, key_prefix)
    on_get: list[Any] = []
    async with CarefulClient(lb, read_timeout=20) as client:
        await client.initialize()
        assert client.session_id is not None
        listener = asyncio.ensure_future(listen(client, on_get))
        try:
            toggled = await client.request("tools/call", {"name": "toggle-simulated-logging", "arguments": {}})
            assert "result" in toggled, toggled
            call = asyncio.ensure_future(
                client.call_tool_resumable(
                    "trigger-long-running-operation", {"duration": DURATION, "steps": STEPS}, resume_timeout=30
                )
            )
            killed = await kill_both_pumps(redis_url, key_prefix, client.session_id, gateways)
            result = await asyncio.wait_for(call, DURATION + 60)
            await asyncio.sleep(4.5)  # what a replay still brings arrives within a re-poll or two
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
    assert "result" in result.response, result.response
    assert_exactly_once([p["progress"] for p in result.progress()], STEPS)
    on_call = result.messages()
    for message in [*on_call, *on_get]:
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", message  # no `{}` marker
    answers = [m for m in on_call if "result" in m or "error" in m]
    assert [m["id"] for m in answers] == [result.response["id"]], answers  # one answer, its own
    # transports §Listening for Messages: the GET stream carries no response, and no call's progress.
    assert not [m for m in on_get if "method" not in m or m["method"] == "notifications/progress"], on_get
    assert [m for m in on_get if m.get("method") == "notifications/message"], "simulated logging never arrived"
    assert_sifted(gateways, killed, await dropped([g for g in gateways if g.proc.pid not in killed]))
