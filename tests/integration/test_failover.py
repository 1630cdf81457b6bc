"""Resumable streams with real processes: three gateway replicas behind HAProxy (round robin,
no stickiness), real upstream MCP servers, replicas killed with SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from tests.integration.careful_client import CarefulClient, ReceivedEvent, SessionGone, iter_sse
from tests.integration.clients import HttpTrace, call_with_progress, sdk_client, text_of
from tests.integration.conftest import GatewayProc, StartGateways, StartLoadBalancer, StartSdkUpstream, StoreUnderTest

GW_ARGS = ("--log-format", "text", "--retry-ms", "200")


async def pump_pid(store: str | Any, key_prefix: str, session_id: str, timeout: float = 10.0) -> int:
    """The pid of the replica holding the lease of the session's open POST answer stream. An SDK
    client also holds a standalone GET stream, pumped wherever its GET landed: killing that one
    would leave the call untouched (which lease SCAN lists first is arbitrary). `store`: a Redis
    URL, or a client (a Cluster client on a Cluster: its SCAN walks every primary)."""
    client = aioredis.from_url(store) if isinstance(store, str) else store
    try:
        for _ in range(int(timeout / 0.05)):
            async for key in client.scan_iter(match=f"{key_prefix}:{{{session_id}}}:lease:*"):
                assert isinstance(key, bytes)  # a client without decode_responses
                stream = key.decode().rsplit(":lease:", 1)[1]
                kind = await client.hget(f"{key_prefix}:{{{session_id}}}:m:{stream}", "kind")
                holder = await client.get(key)
                if holder and kind == b"post":
                    assert isinstance(holder, bytes)
                    return int(holder.decode().split(":")[1])
            await asyncio.sleep(0.05)
    finally:
        if isinstance(store, str):
            await client.aclose()
    raise AssertionError("no pump lease of a POST answer stream found")


def kill_pid(gateways: list[GatewayProc], pid: int) -> GatewayProc:
    (victim,) = [g for g in gateways if g.proc.pid == pid]
    os.kill(pid, signal.SIGKILL)
    return victim


def assert_exactly_once(progress: list[float], steps: int) -> None:
    counts = Counter(progress)
    assert sorted(counts) == list(range(1, steps + 1)), f"lost: {set(range(1, steps + 1)) - set(counts)}"
    assert all(n == 1 for n in counts.values()), f"duplicated: {[p for p, n in counts.items() if n > 1]}"
    assert progress == sorted(progress), "out of order"


async def test_sdk_client_survives_sigkill_of_pumping_replica(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    takeover_store: StoreUnderTest,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *takeover_store.gateway_args))
    lb = load_balancer(gateways)
    steps = 20
    trace = HttpTrace()
    async with sdk_client(lb, trace=trace) as (client, get_sid):
        call = asyncio.ensure_future(call_with_progress(client, "slow_count", {"steps": steps, "delay": 0.15}))
        await asyncio.sleep(1.0)  # several progress events went out
        sid = get_sid()
        assert sid is not None
        kill_pid(gateways, await pump_pid(takeover_store.client, key_prefix, sid))
        result, progress = await asyncio.wait_for(call, 60)
    assert text_of(result) == f"counted {steps}"
    assert_exactly_once([p.progress for p in progress], steps)
    resumes = trace.resumption_gets()
    assert resumes and all(r.status == 200 for r in resumes), resumes  # it really resumed


async def test_careful_client_survives_two_kills_in_one_call(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    takeover_store: StoreUnderTest,
) -> None:
    upstream = sdk_upstream(event_store=True)
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *takeover_store.gateway_args))
    lb = load_balancer(gateways)
    steps = 24
    kills: list[int] = []
    async with CarefulClient(lb, read_timeout=20) as client:
        await client.initialize()
        sid = client.session_id
        assert sid is not None

        async def killer() -> None:
            for at in (0.8, 2.5):
                await asyncio.sleep(at if not kills else at - 0.8)
                pid = await pump_pid(takeover_store.client, key_prefix, sid)
                kills.append(pid)
                kill_pid(gateways, pid)

        task = asyncio.ensure_future(killer())
        result = await client.call_tool_resumable("slow_count", {"steps": steps, "delay": 0.2}, resume_timeout=30)
        await task
    assert len(set(kills)) == 2, "the second kill must hit the replica the stream moved to"
    assert result.response["result"]["content"][0]["text"] == f"counted {steps}"
    assert_exactly_once([p["progress"] for p in result.progress()], steps)
    ids = result.event_ids()
    assert len(ids) == len(set(ids)), "an event id was delivered twice"


async def test_client_drop_with_replicas_alive_resumes_elsewhere(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    gw1, _gw2, gw3 = gateway_cluster(3, {"default": upstream}, key_prefix, GW_ARGS)
    steps = 12

    def drop(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
        return event.connection == 0 and event.message is not None and len(events) >= 4

    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        result = await client.call_tool_resumable(
            "slow_count", {"steps": steps, "delay": 0.1}, drop_when=drop, resume_url=gw3.url, resume_delay=0.5
        )
    assert result.connections >= 2
    assert_exactly_once([p["progress"] for p in result.progress()], steps)
    assert result.response["result"]["content"][0]["text"] == f"counted {steps}"


async def test_upstream_without_resumability_errors_instead_of_hanging(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    takeover_store: StoreUnderTest,
) -> None:
    upstream = sdk_upstream(event_store=False)  # no event ids: the upstream stream cannot be re-opened
    gateways = gateway_cluster(3, {"default": upstream}, key_prefix, (*GW_ARGS, *takeover_store.gateway_args))
    lb = load_balancer(gateways)
    async with CarefulClient(lb) as client:
        await client.initialize()
        sid = client.session_id
        assert sid is not None

        async def killer() -> None:
            await asyncio.sleep(0.6)
            kill_pid(gateways, await pump_pid(takeover_store.client, key_prefix, sid))

        task = asyncio.ensure_future(killer())
        result = await asyncio.wait_for(
            client.call_tool_resumable("slow_count", {"steps": 30, "delay": 0.1}, resume_timeout=20), 40
        )
        await task
    error = result.response["error"]
    assert error["code"] == -32000 and "could not be resumed" in error["message"]
    progress = [p["progress"] for p in result.progress()]
    assert progress == sorted(set(progress)), "no duplicates even on the failure path"


async def test_redis_flush_mid_stream_errors_instead_of_hanging(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    flush_url = "redis://127.0.0.1:6379/13"  # a database of its own: FLUSHDB touches nothing else
    upstream = sdk_upstream(event_store=True)
    # a later --redis-url wins over the fixture's one
    gw1, _ = gateway_cluster(2, {"default": upstream}, key_prefix, (*GW_ARGS, "--redis-url", flush_url))
    redis_client = aioredis.from_url(flush_url)
    try:
        async with CarefulClient(gw1.url) as client:
            await client.initialize()

            async def flusher() -> None:
                await asyncio.sleep(0.6)
                await redis_client.flushdb()

            task = asyncio.ensure_future(flusher())
            outcome = await asyncio.wait_for(
                client.call_tool_resumable("slow_count", {"steps": 30, "delay": 0.1}, resume_timeout=10), 30
            )
            await task
    except SessionGone:
        pass  # the session record went with the flush: 404 tells the client to re-initialize
    else:
        # the replica still streaming to the client answers the pending request with an error
        assert outcome.response["error"]["code"] == -32000, outcome.response
    finally:
        await redis_client.aclose()


async def test_standalone_get_stream_resumes_on_another_replica(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, redis_url: str
) -> None:
    upstream = sdk_upstream(event_store=True)
    gw1, gw2, gw3 = gateway_cluster(3, {"default": upstream}, key_prefix, GW_ARGS)
    count = 12
    seen: list[str] = []
    ids: list[str] = []
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        get_headers = client.headers(accept="text/event-stream", post=False)
        async with client.http.stream("GET", gw1.url, headers=get_headers) as stream:
            assert stream.status_code == 200
            client.url = gw2.url
            call = asyncio.ensure_future(
                client.request("tools/call", {"name": "broadcast", "arguments": {"count": count, "delay": 0.1}})
            )
            async for event in iter_sse(stream):
                if event.id:
                    ids.append(event.id)
                message = event.json()
                if isinstance(message, dict) and message.get("method") == "notifications/resources/updated":
                    seen.append(message["params"]["uri"])
                    if len(seen) == 3:
                        break
        os.kill(gw1.proc.pid, signal.SIGKILL)  # the replica pumping the GET stream
        while len(seen) < count:
            headers = client.headers(accept="text/event-stream", post=False, last_event_id=ids[-1])
            async with client.http.stream("GET", gw3.url, headers=headers) as stream:
                assert stream.status_code == 200
                async for event in iter_sse(stream):
                    if event.id and event.data.strip():  # a priming event repeats the cursor's id
                        ids.append(event.id)
                    message = event.json()
                    if isinstance(message, dict) and message.get("method") == "notifications/resources/updated":
                        seen.append(message["params"]["uri"])
                        if len(seen) == count:
                            break
        answer = await call
    assert answer["result"]["content"][0]["text"] == f"broadcast {count}"
    assert seen == [f"res://{i}" for i in range(count)]  # every one, once, in order
    assert len(ids) == len(set(ids))


async def test_a_standalone_stream_that_cannot_be_resumed_is_listened_to_afresh(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """An upstream without an event store gives its GET stream no event ids: when the replica
    pumping it is SIGKILLed, the replica that adopts it cannot re-open it and ends it. A client
    resuming it used to get an empty stream again and again (the SDK client polled every retry
    interval until the session ended); now it gets a fresh standalone stream, and the server's
    notifications reach it there."""
    upstream = sdk_upstream(event_store=False)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        listen = client.headers(accept="text/event-stream", post=False)
        async with client.http.stream("GET", gw1.url, headers=listen) as r:
            assert r.status_code == 200
            primed = await anext(iter_sse(r))  # 2025-11-25: the priming event names stream and cursor
        assert primed.id is not None
        ended_stream = primed.id.rsplit(".", 1)[0]
        os.kill(gw1.proc.pid, signal.SIGKILL)  # the replica pumping the GET stream
        client.url = gw2.url
        resumes = 0
        while True:
            resumes += 1
            assert resumes <= 3, "the client keeps getting empty streams"
            headers = client.headers(accept="text/event-stream", post=False, last_event_id=primed.id)
            async with client.http.stream("GET", gw2.url, headers=headers) as r:
                assert r.status_code == 200
                events = iter_sse(r)
                first = await anext(events, None)
                if first is None or first.id is None or first.id.rsplit(".", 1)[0] == ended_stream:
                    async for _ in events:  # the old stream, until the adopting replica ends it
                        pass  # (it finds nothing to resume from)
                    continue
                call = asyncio.ensure_future(
                    client.request("tools/call", {"name": "broadcast", "arguments": {"count": 2, "delay": 0.1}})
                )
                seen: list[str] = []
                async for event in events:
                    message = event.json()
                    if isinstance(message, dict) and message.get("method") == "notifications/resources/updated":
                        seen.append(message["params"]["uri"])
                        if len(seen) == 2:
                            break
                break
        answer = await call
    assert answer["result"]["content"][0]["text"] == "broadcast 2"
    assert seen == ["res://0", "res://1"]  # delivered on the fresh stream


async def test_upstream_polling_close_is_followed_through_gateway(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True, retry_interval=100)
    (gw,) = gateway_cluster(1, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw.url) as client:
        await client.initialize()
        # The upstream closes its SSE stream after progress 3 (2025-11-25 polling); the gateway
        # reconnects upstream with Last-Event-ID and passes the close on to this 2025-11-25 client,
        # which polls with its own Last-Event-ID: two connections, every event exactly once.
        # Steps are spaced well apart: the SDK server (2.3.0) has a known replay -> live-tail
        # window in which an event produced during the replay is stored but never sent.
        result = await client.call_tool_resumable("slow_count", {"steps": 6, "delay": 0.4, "close_stream_at": 3})
    assert result.connections == 2
    assert_exactly_once([p["progress"] for p in result.progress()], 6)
