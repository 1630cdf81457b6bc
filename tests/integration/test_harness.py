"""Smoke tests for the integration harness itself (no gateway involved)."""

from __future__ import annotations

import asyncio

from tests.integration.careful_client import CarefulClient, ReceivedEvent
from tests.integration.clients import HttpTrace, call_with_progress, sdk_client, sdk_session, text_of
from tests.integration.conftest import StartLoadBalancer, StartSdkUpstream, Upstream


async def test_sdk_client_direct(sdk_upstream: StartSdkUpstream) -> None:
    url = sdk_upstream(name="direct")
    async with sdk_session(url) as (session, get_sid):
        assert get_sid()
        assert session.protocol_version == "2025-11-25"
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {"echo", "add", "whoami", "slow_count"} <= tools
        assert text_of(await session.call_tool("echo", {"text": "hi"})) == "hi"
        assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5"
        assert text_of(await session.call_tool("whoami", {})) == "direct"
        result, progress = await call_with_progress(session, "slow_count", {"steps": 4, "delay": 0.05})
        assert text_of(result) == "counted 4"
        assert [p.progress for p in progress] == [1, 2, 3, 4]
        assert all(p.total == 4 for p in progress)


async def test_sdk_client_old_protocol_and_high_level_client(sdk_upstream: StartSdkUpstream) -> None:
    url = sdk_upstream(event_store=False, json_response=True)
    trace = HttpTrace()
    async with sdk_session(url, protocol_version="2025-03-26", trace=trace) as (session, get_sid):
        assert session.protocol_version == "2025-03-26"
        assert text_of(await session.call_tool("echo", {"text": "old"})) == "old"
        assert get_sid()
    assert any(r.protocol_version == "2025-03-26" for r in trace.records if r.method == "POST")
    async with sdk_client(url) as (client, get_sid):
        assert get_sid()
        assert text_of(await client.call_tool("add", {"a": 1, "b": 1})) == "2"


async def test_sdk_client_through_haproxy(
    sdk_upstream: StartSdkUpstream, sdk_upstreams: list[Upstream], load_balancer: StartLoadBalancer
) -> None:
    sdk_upstream(name="behind-lb")
    lb_url = load_balancer([sdk_upstreams[0].port])
    async with sdk_session(lb_url) as (session, get_sid):
        assert get_sid()
        for i in range(5):
            assert text_of(await session.call_tool("echo", {"text": f"x{i}"})) == f"x{i}"
        result, progress = await call_with_progress(session, "slow_count", {"steps": 3, "delay": 0.05})
        assert text_of(result) == "counted 3"
        assert len(progress) == 3
        assert text_of(await session.call_tool("whoami", {})) == "behind-lb"


async def test_careful_client_resumes_after_drop(sdk_upstream: StartSdkUpstream) -> None:
    url = sdk_upstream(event_store=True)
    async with CarefulClient(url) as cc:
        await cc.initialize()
        assert cc.session_id

        def drop(ev: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
            n = sum(
                1 for e in events if isinstance(e.message, dict) and e.message.get("method") == "notifications/progress"
            )
            return ev.connection == 0 and n == 2

        res = await cc.call_tool_resumable("slow_count", {"steps": 6, "delay": 0.15}, drop_when=drop)
        assert res.connections == 2
        assert res.response["result"]["content"][0]["text"] == "counted 6"
        assert [p["progress"] for p in res.progress()] == [1, 2, 3, 4, 5, 6]
        ids = [int(i) for i in res.event_ids()]
        assert len(ids) == len(set(ids)) and ids == sorted(ids)
        assert max(e.connection for e in res.events if isinstance(e.message, dict)) >= 1
        # Exactly once: no JSON-RPC message (progress or response) was delivered twice.
        datas = [e.data for e in res.events if isinstance(e.message, dict)]
        assert len(datas) == len(set(datas)) == 7
        # The server kept running the tool while no connection was attached: resumption with the
        # final id replays nothing more and the session is still usable.
        assert (await cc.request("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}))["result"]
        assert await cc.delete_session() in (200, 204)


async def test_server_keeps_running_tool_while_disconnected(sdk_upstream: StartSdkUpstream) -> None:
    url = sdk_upstream(event_store=True)
    async with CarefulClient(url) as cc:
        await cc.initialize()

        def drop_at_first_progress(ev: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
            return (
                ev.connection == 0
                and isinstance(ev.message, dict)
                and ev.message.get("method") == "notifications/progress"
            )

        # The tool finishes (0.2 s) long before the client resumes (1 s): events were stored anyway.
        res = await cc.call_tool_resumable(
            "slow_count", {"steps": 3, "delay": 0.1}, drop_when=drop_at_first_progress, resume_delay=1.0
        )
        assert res.connections == 2
        assert [p["progress"] for p in res.progress()] == [1, 2, 3]
        assert res.response["result"]["content"][0]["text"] == "counted 3"


async def test_everything_upstream_answers(everything_upstream: str) -> None:
    async with CarefulClient(everything_upstream) as cc:
        init = await cc.initialize()
        assert init["serverInfo"]["name"]
        assert cc.session_id
        tools = (await cc.request("tools/list", {}))["result"]["tools"]
        names = {t["name"] for t in tools}
        assert {"echo", "get-sum", "trigger-long-running-operation"} <= names


async def test_sdk_client_resumes_server_closed_stream(sdk_upstream: StartSdkUpstream) -> None:
    """The SDK client resumes with GET + Last-Event-ID when the server closes the POST stream."""
    url = sdk_upstream(event_store=True, retry_interval=100)
    trace = HttpTrace()
    async with sdk_session(url, trace=trace) as (session, _):
        result, progress = await call_with_progress(
            session, "slow_count", {"steps": 5, "delay": 0.1, "close_stream_at": 2}
        )
        assert text_of(result) == "counted 5"
        assert [p.progress for p in progress] == [1, 2, 3, 4, 5]
    gets = trace.resumption_gets()
    assert len(gets) == 1 and gets[0].status == 200


async def test_careful_client_resumes_against_everything(everything_upstream: str) -> None:
    """server-everything: UUID event ids, a resumed GET replays but does not live-tail and never
    closes by itself, so the careful client reconnects after its read timeout."""
    async with CarefulClient(everything_upstream, read_timeout=1.5) as cc:
        await cc.initialize()

        def drop(ev: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
            return (
                ev.connection == 0
                and isinstance(ev.message, dict)
                and ev.message.get("method") == "notifications/progress"
            )

        res = await cc.call_tool_resumable(
            "trigger-long-running-operation", {"duration": 1, "steps": 2}, drop_when=drop
        )
        assert [p["progress"] for p in res.progress()] == [1, 2]
        assert "completed" in res.response["result"]["content"][0]["text"]
        assert res.events[0].data.strip() == "" and res.events[0].id  # priming event
        assert "ReadTimeout" in res.statuses


async def test_event_stores_are_per_session(sdk_upstream: StartSdkUpstream) -> None:
    """Two sessions use the same JSON-RPC request id (= SDK stream id); replays must not mix."""
    url = sdk_upstream(event_store=True)

    def drop(ev: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
        return (
            ev.connection == 0 and isinstance(ev.message, dict) and ev.message.get("method") == "notifications/progress"
        )

    async def run(steps: int) -> list[dict[str, object]]:
        async with CarefulClient(url) as cc:
            await cc.initialize()
            res = await cc.call_tool_resumable(
                "slow_count", {"steps": steps, "delay": 0.1}, drop_when=drop, resume_delay=0.3
            )
            assert res.response["result"]["content"][0]["text"] == f"counted {steps}"
            return res.progress()

    a, b = await asyncio.gather(run(3), run(5))
    assert [(p["progress"], p["total"]) for p in a] == [(i, 3) for i in range(1, 4)]
    assert [(p["progress"], p["total"]) for p in b] == [(i, 5) for i in range(1, 6)]
