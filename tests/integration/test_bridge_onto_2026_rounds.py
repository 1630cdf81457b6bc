"""Era bridging, part B, with real processes, across replicas: input-required rounds answered on
another replica, a replica SIGKILLed mid-call, repeated and cancelled requests, the standalone stream
served from an upstream subscriptions/listen, the gateway's own ping and log level."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import httpx

from tests.integration.bridge_2026 import GW_ARGS, start_2026_upstream
from tests.integration.careful_client import CarefulClient, ReceivedEvent, iter_sse
from tests.integration.conftest import GatewayProc, StartGateways
from tests.integration.procs import ProcessGroup
from tests.integration.redis_topologies import LocalCluster


async def elicit_across(client: CarefulClient, gw1: GatewayProc, gw2: GatewayProc) -> dict[str, Any] | None:
    """Initialize with the elicitation capability on gw1, call `ask` there, answer its
    elicitation/create on gw2; the call's final answer."""
    init = {
        "protocolVersion": "2025-11-25",
        "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "careful-client", "version": "0"},
    }
    client.initialize_result = (await client.request("initialize", init))["result"]
    call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "ask", "arguments": {}}}
    async with client.http.stream("POST", gw1.url, json=call, headers=client.headers()) as response:
        assert response.status_code == 200
        async for event in iter_sse(response):
            message = event.json()
            if isinstance(message, dict) and message.get("method") == "elicitation/create":
                assert message["params"]["message"] == "What is your name?"
                content = {"action": "accept", "content": {"name": "Bob"}}
                reply = {"jsonrpc": "2.0", "id": message["id"], "result": content}
                posted = await client.http.post(gw2.url, json=reply, headers=client.headers())
                assert posted.status_code == 202  # collected by gw2, in Redis, for gw1's round
            elif isinstance(message, dict) and message.get("id") == 9:
                return message
    return None


async def test_elicitation_answer_posted_to_another_replica(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url) as client:
        final = await elicit_across(client, gw1, gw2)
    assert final is not None and final["result"]["content"][0]["text"] == "hello Bob from u1"


async def test_bridged_state_on_a_redis_cluster(
    redis_cluster: LocalCluster, procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """The bridge's keys share the session's hash tag: answers, subscriptions and the log level work
    on a 3-primary Cluster (its scripts and pipelines stay in one slot)."""
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, (*GW_ARGS, *redis_cluster.gateway_args()))
    async with CarefulClient(gw1.url) as client:
        final = await elicit_across(client, gw1, gw2)
        assert final is not None and final["result"]["content"][0]["text"] == "hello Bob from u1"
        client.url = gw2.url
        assert (await client.request("resources/subscribe", {"uri": "res://a"}))["result"] == {}
        assert (await client.request("logging/setLevel", {"level": "info"}))["result"] == {}
        answer = await client.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
        assert answer["result"]["structuredContent"] == {"result": 2}


async def test_sigkill_of_the_replica_running_a_bridged_call_answers_its_id_with_an_error(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """2026-07-28 has no resumption: the upstream call dies with the replica that holds it. The
    client's stream is in Redis; the replica that adopts it cannot re-open the upstream request and
    answers the pending id with a JSON-RPC error, which the client's resume delivers (no hang)."""
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    killed: list[int] = []

    def kill_after_first_progress(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
        message = event.message
        if not killed and isinstance(message, dict) and message.get("method") == "notifications/progress":
            os.kill(gw1.proc.pid, signal.SIGKILL)
            killed.append(gw1.proc.pid)
            return True
        return False

    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        result = await client.call_tool_resumable(
            "slow_count",
            {"steps": 20, "delay": 0.3},
            drop_when=kill_after_first_progress,
            resume_url=gw2.url,
            resume_timeout=20.0,
        )
    assert killed
    assert "error" in result.response, result.response
    assert "could not be resumed" in result.response["error"]["message"]
    progress = [p["progress"] for p in result.progress()]
    assert progress[:1] == [1] and progress == sorted(set(progress))  # each logged event once, in order


async def test_standalone_stream_is_an_upstream_listen_that_follows_subscriptions_on_any_replica(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url) as client:
        caps = (await client.initialize())["capabilities"]
        assert caps["resources"] == {"subscribe": True, "listChanged": True}
        other = CarefulClient(gw2.url, http=client.http)
        other.session_id, other.initialize_result = client.session_id, client.initialize_result
        listen = client.headers(accept="text/event-stream", post=False)
        async with client.http.stream("GET", gw1.url, headers=listen) as stream:
            assert stream.status_code == 200
            events = iter_sse(stream)

            async def touch(uri: str) -> list[dict[str, Any]]:
                """Touch `uri`; the notifications up to the tool-list change the server sends after it."""
                await other.request("tools/call", {"name": "touch", "arguments": {"uri": uri}})
                got: list[dict[str, Any]] = []
                async for event in events:
                    if event.data.strip():
                        got.append(event.json())
                        if got[-1]["method"] == "notifications/tools/list_changed":
                            return got
                raise AssertionError("the standalone stream ended")

            assert (await other.request("resources/subscribe", {"uri": "res://a"}))["result"] == {}
            # The replica pumping the GET stream listens again with the new filter at its next look
            # (every second); until then a touch only announces the tool-list change.
            updated = {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "res://a"}}
            for _ in range(40):
                got = await touch("res://a")
                if updated in got:  # the subscription id of the listen stream does not cross
                    break
                await asyncio.sleep(0.25)
            else:
                raise AssertionError("no resources/updated for the subscribed URI")
            assert {m["method"] for m in await touch("res://b")} == {"notifications/tools/list_changed"}
            assert await other.delete_session() == 200  # DELETE ends the session and its listen stream
            async with asyncio.timeout(30):
                async for _ in events:
                    pass


async def test_ping_and_log_level_are_kept_by_the_gateway(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """2026-07-28 removed ping and logging/setLevel: the gateway answers them, and sends the level
    in each later request's _meta (without it the server sends no log notifications)."""
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        assert (await client.request("ping"))["result"] == {}

        async def logs_of_a_shout(url: str) -> list[Any]:
            call = {
                "jsonrpc": "2.0",
                "id": f"s{client.next_id()}",
                "method": "tools/call",
                "params": {"name": "shout", "arguments": {"text": "hey"}},
            }
            async with client.http.stream("POST", url, json=call, headers=client.headers()) as response:
                if response.headers["content-type"].startswith("application/json"):
                    return []
                messages = [e.json() async for e in iter_sse(response) if e.data.strip()]
            return [m["params"]["data"] for m in messages if m.get("method") == "notifications/message"]

        assert await logs_of_a_shout(gw1.url) == []
        assert (await client.request("logging/setLevel", {"level": "info"}))["result"] == {}
        assert await logs_of_a_shout(gw2.url) == ["hey"]  # the level is the session's, on any replica


async def test_a_repeated_request_is_answered_from_the_first_copy(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """A load balancer's retry of a POST (same session, id and body) on another replica is not run
    again: the bridged request claims its id like a relayed one; the same id with another body is
    refused."""
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        args = {"name": "slow_count", "arguments": {"steps": 2, "delay": 0.1}}
        first = await client.request("tools/call", args, request_id=5)
        client.url = gw2.url
        repeat = await client.request("tools/call", args, request_id=5)
        echo = {"name": "echo", "arguments": {"text": "x"}}
        other = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": echo}
        refused = await client.http.post(gw1.url, json=other, headers=client.headers())
    assert first["result"]["content"][0]["text"] == "counted 2"
    assert repeat == first
    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith("Invalid Request: request id already used")
    async with httpx.AsyncClient() as plain:
        stats = (await plain.get(upstream.removesuffix("/mcp") + "/stats")).json()
    assert stats["started"] == 1  # the tool ran once


async def test_cancelled_notification_on_another_replica_closes_the_upstream_request(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """2025 notifications/cancelled, POSTed to any replica, becomes the 2026-07-28 cancellation
    (the replica running the call closes its upstream request): the tool does not finish."""
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, GW_ARGS)
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "slow_count", "arguments": {"steps": 30, "delay": 0.2}, "_meta": {"progressToken": 1}},
        }
        cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3, "reason": "bored"}}
        async with client.http.stream("POST", gw1.url, json=call, headers=client.headers()) as response:
            seen: list[dict[str, Any]] = []
            async for event in iter_sse(response):
                message = event.json() if event.data.strip() else None
                if isinstance(message, dict):
                    seen.append(message)
                    if len(seen) == 1:
                        posted = await client.http.post(gw2.url, json=cancel, headers=client.headers())
                        assert posted.status_code == 202
                    if message.get("id") == 3:
                        break
    assert seen[-1]["error"]["message"] == "Request cancelled by the client"
    assert len(seen) < 30  # it ended long before the tool would have
    async with httpx.AsyncClient() as plain:
        for _ in range(50):
            stats = (await plain.get(upstream.removesuffix("/mcp") + "/stats")).json()
            if stats["cancelled"]:
                break
            await asyncio.sleep(0.1)
    assert stats == {"started": 1, "finished": 0, "cancelled": 1}


async def test_an_ended_standalone_stream_resumes_into_a_new_listen(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    """A quiet standalone stream ends at the stream idle bound; the client's resume (GET with the
    Last-Event-ID it holds) gets a new listen stream, not the upstream's refusal of a GET."""
    upstream = start_2026_upstream(procs)
    gw1, gw2 = gateway_cluster(2, {"default": upstream}, key_prefix, (*GW_ARGS, "--stream-idle-timeout", "1"))
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        last: str | None = None
        async with client.http.stream(
            "GET", gw1.url, headers=client.headers(accept="text/event-stream", post=False)
        ) as r:
            assert r.status_code == 200
            async for event in iter_sse(r):  # ends: nothing happens upstream for a second
                last = event.id or last
        assert last is not None  # 2025-11-25: the priming event named the stream
        resume = client.headers(accept="text/event-stream", post=False, last_event_id=last)
        async with client.http.stream("GET", gw2.url, headers=resume) as r:
            assert r.status_code == 200
            events = iter_sse(r)
            await client.request("tools/call", {"name": "touch", "arguments": {"uri": "res://z"}})
            async for event in events:
                if event.data.strip():
                    assert event.json()["method"] == "notifications/tools/list_changed"
                    break
