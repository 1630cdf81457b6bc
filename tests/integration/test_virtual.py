"""Virtual servers with real processes: two SDK servers with different tool sets as members, three
gateway replicas behind a non-sticky load balancer, members and replicas killed mid-session."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway.inspection import Inspector, session_text
from gateway.store.keys import Keys
from tests.integration.careful_client import CarefulClient, CarefulClientError, SessionGone, SseEvent, iter_sse
from tests.integration.clients import HttpTrace, call_with_progress, sdk_client, text_of
from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.procs import REPO_ROOT, Proc, ProcessGroup, free_port
from tests.integration.redis_topologies import LocalCluster
from tests.integration.test_failover import assert_exactly_once, kill_pid, pump_pid
from tests.integration.test_stateless import MODERN, modern_call, modern_headers
from tests.integration.test_tasks import get, result, rpc
from tests.integration.test_tasks_passthrough import TASKS_SERVER

NOTES_SERVER = REPO_ROOT / "tests" / "servers" / "sdk_notes_server.py"
ARGS = ("--log-format", "text", "--health-interval", "0.3", "--health-timeout", "0.3", "--retry-ms", "200")
VIRTUAL = ("--virtual-server", "all=search,notes")
UPDATED = "notifications/resources/updated"


def start_notes(procs: ProcessGroup, name: str, port: int | None = None) -> tuple[str, Proc]:
    """`sdk_notes_server.py` on `port` (a free one by default); its /mcp URL and process."""
    port = port or free_port()
    argv = [sys.executable, str(NOTES_SERVER), "--port", str(port), "--name", name, "--event-store"]
    proc = procs.start(f"notes-{name}-{port}", argv)
    proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    return f"http://127.0.0.1:{port}/mcp", proc


async def member_entry(redis_url: str, key_prefix: str, session_id: str, pool: str) -> dict[str, str]:
    client = aioredis.from_url(redis_url)
    try:
        raw = await client.hget(f"{key_prefix}:{{{session_id}}}:session", f"member:{pool}")
    finally:
        await client.aclose()
    assert raw is not None, f"no member entry for {pool}"
    entry: dict[str, str] = json.loads(raw)
    return entry


async def until_ok(call: object, attempts: int = 60) -> str:
    """Retry a member call while its member is still down (the health probe has not seen it back)."""
    assert callable(call)
    for _ in range(attempts):
        try:
            return str(await call())
        except MCPError:
            await asyncio.sleep(0.2)
    raise AssertionError("the member never came back")


@pytest.fixture
def virtual_lb(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    procs: ProcessGroup,
    key_prefix: str,
) -> tuple[str, Proc, int]:
    """Members `search` (sdk_server.py) and `notes` (sdk_notes_server.py) of the virtual server `all`
    behind three replicas and a load balancer: the virtual server's URL, the notes process, its port."""
    search = sdk_upstream(name="s1")
    notes, proc = start_notes(procs, "n1")
    port = int(notes.split(":")[2].split("/")[0])
    gateways = gateway_cluster(3, {"search": search, "notes": notes}, key_prefix, (*ARGS, *VIRTUAL))
    return f"{load_balancer(gateways)}/all", proc, port


async def test_one_session_over_two_members(virtual_lb: tuple[str, Proc, int]) -> None:
    url, _, _ = virtual_lb
    async with sdk_client(url) as (client, get_sid):
        assert client.server_info is not None and client.server_info.name == "all"
        assert "## notes\nn1 keeps notes." in (client.instructions or "")
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"search__echo", "search__add", "notes__echo", "notes__note_add"} <= names
        assert not any(n in names for n in ("echo", "add"))
        # the same tool name on both members: the prefix picks the member
        assert text_of(await client.call_tool("search__echo", {"text": "hi"})) == "hi"
        assert text_of(await client.call_tool("notes__echo", {"text": "hi"})) == "n1:hi"
        assert text_of(await client.call_tool("search__add", {"a": 2, "b": 3})) == "5"
        assert text_of(await client.call_tool("notes__note_add", {"text": "x"})) == "1"
        assert [p.name for p in (await client.list_prompts()).prompts] == ["notes__summary"]
        prompt = await client.get_prompt("notes__summary", {"topic": "t"})
        assert "about t" in str(prompt.messages[0].content)
        assert [str(r.uri) for r in (await client.list_resources()).resources] == ["notes://index"]
        assert "x" in str((await client.read_resource("notes://index")).contents[0])
        assert "x" in str((await client.read_resource("notes://0")).contents[0])  # by the member's template
        with pytest.raises(MCPError, match="Unknown tool"):
            await client.call_tool("nobody__echo", {"text": "hi"})
        assert get_sid() is not None


async def test_member_killed_and_restarted_mid_session(virtual_lb: tuple[str, Proc, int], procs: ProcessGroup) -> None:
    url, notes, port = virtual_lb
    async with sdk_client(url) as (client, get_sid):
        assert text_of(await client.call_tool("notes__echo", {"text": "a"})) == "n1:a"
        sid = get_sid()
        notes.kill(signal.SIGKILL)
        with pytest.raises(MCPError, match="'notes'"):
            await client.call_tool("notes__echo", {"text": "b"})
        # the other member keeps working, and the dead one's tools leave the list
        assert text_of(await client.call_tool("search__add", {"a": 1, "b": 1})) == "2"
        assert not any(t.name.startswith("notes__") for t in (await client.list_tools()).tools)
        start_notes(procs, "n2", port)  # back on the same address, without the old upstream session
        echoed = await until_ok(lambda: client.call_tool("notes__echo", {"text": "c"}))
        assert "n2:c" in echoed
        assert get_sid() == sid  # the client never initialized again
        assert any(t.name == "notes__note_add" for t in (await client.list_tools()).tools)


async def test_member_session_expired_by_the_member_is_reestablished(
    virtual_lb: tuple[str, Proc, int], redis_url: str, key_prefix: str
) -> None:
    url, _, _ = virtual_lb
    async with CarefulClient(url) as client:
        await client.initialize()
        assert client.session_id is not None
        before = await member_entry(redis_url, key_prefix, client.session_id, "notes")
        async with httpx.AsyncClient() as http:  # the member ends its session: it will answer 404
            ended = await http.delete(
                before["instance"],
                headers={"mcp-session-id": before["sid"], "mcp-protocol-version": before["protocol"]},
            )
        assert ended.status_code == 200
        answer = await client.request("tools/call", {"name": "notes__echo", "arguments": {"text": "z"}})
        assert answer["result"]["content"][0]["text"] == "n1:z"
        after = await member_entry(redis_url, key_prefix, client.session_id, "notes")
        assert after["sid"] != before["sid"] and after["state"] == "up"
        # `mcp-gateway inspect session` shows the members and their upstream sessions
        redis = aioredis.from_url(redis_url)
        try:
            seen = await Inspector(redis, Keys(key_prefix)).session(client.session_id[:8])
        finally:
            await redis.aclose()
        assert seen.pool == "all"
        assert [(m.pool, m.state, m.instance, m.sid) for m in seen.members] == [
            ("notes", "up", before["instance"], after["sid"]),
            ("search", "up", seen.members[1].instance, seen.members[1].sid),
        ]
        assert seen.members[1].sid and "member      notes: up on " in session_text(seen)
        assert await client.delete_session() == 200  # ends the members' upstream sessions too
        with pytest.raises(SessionGone):
            await client.request("tools/list")
    async with httpx.AsyncClient() as http:
        gone = await http.post(
            before["instance"],
            json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"},
            headers={
                "mcp-session-id": after["sid"],
                "mcp-protocol-version": after["protocol"],
                "accept": "application/json, text/event-stream",
            },
        )
        assert gone.status_code == 404


async def test_member_that_never_comes_up(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str
) -> None:
    search = sdk_upstream(name="s1")
    ghost = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    (gateway,) = gateway_cluster(
        1, {"search": search, "ghost": ghost}, key_prefix, (*ARGS, "--virtual-server", "v=ghost,search")
    )
    async with sdk_client(f"{gateway.url}/v") as (client, _):
        names = {t.name for t in (await client.list_tools()).tools}
        assert "search__echo" in names and not any(n.startswith("ghost__") for n in names)
        with pytest.raises(MCPError, match="'ghost'"):
            await client.call_tool("ghost__echo", {"text": "x"})
        assert text_of(await client.call_tool("search__echo", {"text": "ok"})) == "ok"


async def test_replica_killed_while_a_members_call_streams(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    procs: ProcessGroup,
    key_prefix: str,
    redis_url: str,
) -> None:
    search = sdk_upstream(name="s1")
    notes, _ = start_notes(procs, "n1")
    gateways = gateway_cluster(3, {"search": search, "notes": notes}, key_prefix, (*ARGS, *VIRTUAL))
    url = f"{load_balancer(gateways)}/all"
    steps = 16
    trace = HttpTrace()
    async with sdk_client(url, trace=trace) as (client, get_sid):
        call = asyncio.ensure_future(call_with_progress(client, "search__slow_count", {"steps": steps, "delay": 0.15}))
        await asyncio.sleep(1.0)
        sid = get_sid()
        assert sid is not None
        kill_pid(gateways, await pump_pid(redis_url, key_prefix, sid))
        result, progress = await asyncio.wait_for(call, 60)
    assert text_of(result) == f"counted {steps}"
    assert_exactly_once([p.progress for p in progress], steps)
    assert any(r.status == 200 for r in trace.resumption_gets())


async def test_2026_clients_get_the_same_names_and_routes(virtual_lb: tuple[str, Proc, int]) -> None:
    url, _, _ = virtual_lb
    async with Client(url, mode="auto") as client:  # probes server/discover: the merged answer
        assert client.protocol_version == MODERN
        assert client.server_info is not None and client.server_info.name == "all"
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"search__echo", "search__add", "notes__echo", "notes__note_count"} <= names
        assert text_of(await client.call_tool("search__add", {"a": 20, "b": 22})) == "42"
        assert text_of(await client.call_tool("notes__echo", {"text": "m"})) == "n1:m"
        assert [p.name for p in (await client.list_prompts()).prompts] == ["notes__summary"]
        assert "no notes" in str((await client.read_resource("notes://index")).contents[0])
    async with httpx.AsyncClient() as http:
        headers = {**modern_headers("echo"), "Mcp-Method": "tools/call"}  # the member's name, not the prefixed one
        answer = await http.post(url, json=modern_call("search__echo", {"text": "x"}), headers=headers)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == -32020
        answer = await http.post(
            url, json=modern_call("search__echo", {"text": "x"}), headers=modern_headers("search__echo")
        )
        assert answer.status_code == 200 and answer.json()["result"]["content"][0]["text"] == "x"


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
async def test_a_members_task_ids_name_the_member(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    procs: ProcessGroup,
    key_prefix: str,
    sse: bool,
) -> None:
    search = sdk_upstream(name="s1")
    port = free_port()
    argv = [sys.executable, str(TASKS_SERVER), "--port", str(port), "--name", "t1", *(["--sse"] if sse else [])]
    procs.start(f"tasks-t1-{port}", argv).wait_http(f"http://127.0.0.1:{port}/healthz", timeout=20)
    pools = {"search": search, "jobs": f"http://127.0.0.1:{port}/mcp"}
    gateways = gateway_cluster(3, pools, key_prefix, (*ARGS, "--virtual-server", "all=search,jobs"))
    url = f"{load_balancer(gateways)}/all"
    created = result(await rpc(url, "tools/call", {"name": "jobs__work", "arguments": {}}))
    assert created["resultType"] == "task" and created["taskId"].startswith("jobs__")
    for _ in range(3):  # every replica: tasks/get with Mcp-Name = the named task id reaches the member
        task = result(await get(url, created["taskId"]))
        assert task["status"] == "completed" and task["taskId"] == created["taskId"], task
        assert task["result"]["content"][0]["text"] == "done by t1"
    assert "error" in await get(url, "nobody__" + created["taskId"])


async def to_the_end(stream: httpx.Response, ids: list[str]) -> None:
    async for event in iter_sse(stream):
        if event.id and event.data.strip():
            ids.append(event.id)


async def next_messages(
    events: AsyncIterator[SseEvent], ids: list[str], method: str, count: int
) -> list[dict[str, Any]]:
    """Read a GET stream's events until `count` messages of `method` came (each event id noted in `ids`)."""
    found: list[dict[str, Any]] = []
    async for event in events:
        if event.id and event.data.strip():
            ids.append(event.id)
        message = event.json() if event.data.strip() else None
        if isinstance(message, dict) and message.get("method") == method:
            found.append(message)
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended before {count} x {method}")


async def test_one_notification_stream_for_every_member(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, procs: ProcessGroup, key_prefix: str
) -> None:
    search = sdk_upstream(name="s1")
    notes, notes_proc = start_notes(procs, "n1")
    port = int(notes.split(":")[2].split("/")[0])
    gw1, gw2, gw3 = gateway_cluster(3, {"search": search, "notes": notes}, key_prefix, (*ARGS, *VIRTUAL))
    ids: list[str] = []
    async with CarefulClient(f"{gw1.url}/all") as client:
        await client.initialize()
        get_headers = client.headers(accept="text/event-stream", post=False)
        async with client.http.stream("GET", f"{gw1.url}/all", headers=get_headers) as stream:
            assert stream.status_code == 200
            client.url = f"{gw2.url}/all"  # requests on another replica than the stream's
            call = asyncio.ensure_future(
                client.request("tools/call", {"name": "search__broadcast", "arguments": {"count": 3, "delay": 0.1}})
            )
            first = await asyncio.wait_for(
                next_messages(iter_sse(stream), ids, "notifications/resources/updated", 1), 30
            )
        assert first[0]["params"]["uri"] == "res://0"
        assert (await call)["result"]["content"][0]["text"] == "broadcast 3"
        # resumed on a third replica: the rest of what the member sent, from the event log
        headers = client.headers(accept="text/event-stream", post=False, last_event_id=ids[-1])
        async with client.http.stream("GET", f"{gw3.url}/all", headers=headers) as stream:
            assert stream.status_code == 200
            events = iter_sse(stream)
            rest = await asyncio.wait_for(next_messages(events, ids, "notifications/resources/updated", 2), 30)
            assert [m["params"]["uri"] for m in rest] == ["res://1", "res://2"]
            notes_proc.kill(signal.SIGKILL)  # the member goes: its tools leave the lists
            await asyncio.wait_for(next_messages(events, ids, "notifications/tools/list_changed", 1), 30)
            listed = await client.request("tools/list")
            assert not any(t["name"].startswith("notes__") for t in listed["result"]["tools"])
            start_notes(procs, "n2", port)  # it comes back: re-opened by the gateway, announced
            await asyncio.wait_for(next_messages(events, ids, "notifications/tools/list_changed", 1), 30)
            # a member's own list change reaches the client on the same stream
            learned = await client.request("tools/call", {"name": "notes__learn", "arguments": {"tool": "fresh"}})
            assert learned["result"]["content"][0]["text"] == "learned fresh"
            await asyncio.wait_for(next_messages(events, ids, "notifications/tools/list_changed", 1), 30)
            listed = await client.request("tools/list")
            assert "notes__fresh" in {t["name"] for t in listed["result"]["tools"]}
        listed = await client.request("tools/list")
        assert any(t["name"] == "notes__note_add" for t in listed["result"]["tools"])
        answer = await client.request("tools/call", {"name": "notes__echo", "arguments": {"text": "q"}})
        assert answer["result"]["content"][0]["text"] == "n2:q"
    assert len(ids) == len(set(ids))


async def test_on_a_redis_cluster(
    redis_cluster: LocalCluster,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    procs: ProcessGroup,
    key_prefix: str,
) -> None:
    search = sdk_upstream(name="s1")
    notes, notes_proc = start_notes(procs, "n1")
    port = int(notes.split(":")[2].split("/")[0])
    args = (*ARGS, *VIRTUAL, *redis_cluster.gateway_args())
    url = f"{load_balancer(gateway_cluster(3, {'search': search, 'notes': notes}, key_prefix, args))}/all"
    async with sdk_client(url) as (client, get_sid):
        assert text_of(await client.call_tool("notes__echo", {"text": "a"})) == "n1:a"
        assert text_of(await client.call_tool("search__add", {"a": 1, "b": 2})) == "3"
        sid = get_sid()
        notes_proc.kill(signal.SIGKILL)
        with pytest.raises(MCPError, match="'notes'"):
            await client.call_tool("notes__echo", {"text": "b"})
        start_notes(procs, "n2", port)
        assert "n2:c" in await until_ok(lambda: client.call_tool("notes__echo", {"text": "c"}))
        assert get_sid() == sid


async def test_a_notification_stream_whose_replica_died_is_listened_to_afresh(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, procs: ProcessGroup, key_prefix: str
) -> None:
    search = sdk_upstream(name="s1")
    notes, _ = start_notes(procs, "n1")
    gw1, gw2 = gateway_cluster(2, {"search": search, "notes": notes}, key_prefix, (*ARGS, *VIRTUAL))
    ids: list[str] = []
    async with CarefulClient(f"{gw2.url}/all") as client:
        await client.initialize()
        get_headers = client.headers(accept="text/event-stream", post=False)
        async with client.http.stream("GET", f"{gw1.url}/all", headers=get_headers) as stream:
            assert stream.status_code == 200
            call = client.request("tools/call", {"name": "search__broadcast", "arguments": {"count": 1}})
            await asyncio.wait_for(asyncio.gather(call, next_messages(iter_sse(stream), ids, UPDATED, 1)), 30)
        os.kill(gw1.proc.pid, signal.SIGKILL)  # the replica reading the members' streams
        # the replica the client resumes on replays what was logged, cannot re-open it there, ends it ...
        headers = client.headers(accept="text/event-stream", post=False, last_event_id=ids[-1])
        async with client.http.stream("GET", f"{gw2.url}/all", headers=headers) as stream:
            assert stream.status_code == 200
            await asyncio.wait_for(to_the_end(stream, ids), 30)  # ends: never a stream that hangs
        # ... and the client's next GET from there listens afresh: new notifications arrive
        headers = client.headers(accept="text/event-stream", post=False, last_event_id=ids[-1])
        async with client.http.stream("GET", f"{gw2.url}/all", headers=headers) as stream:
            assert stream.status_code == 200
            call = client.request("tools/call", {"name": "search__broadcast", "arguments": {"count": 1}})
            _, seen = await asyncio.wait_for(asyncio.gather(call, next_messages(iter_sse(stream), ids, UPDATED, 1)), 30)
        assert seen[0]["params"]["uri"] == "res://0"


async def test_a_repeated_call_runs_once_on_its_member(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    procs: ProcessGroup,
    key_prefix: str,
) -> None:
    search = sdk_upstream(name="s1")
    notes, _ = start_notes(procs, "n1")
    url = f"{load_balancer(gateway_cluster(3, {'search': search, 'notes': notes}, key_prefix, (*ARGS, *VIRTUAL)))}/all"
    arguments = {"steps": 3, "delay": 0.1, "tag": "once"}
    async with CarefulClient(url) as client:
        await client.initialize()
        first = await client.call_tool_resumable("search__slow_count", arguments, request_id=7)
        again = await client.call_tool_resumable("search__slow_count", arguments, request_id=7)  # another replica
        assert first.response["result"] == again.response["result"]
        assert [p["progress"] for p in again.progress()] == [1, 2, 3]  # the first copy's stream, replayed
        with pytest.raises(CarefulClientError, match="409"):  # the same id with another body
            await client.request("tools/call", {"name": "search__echo", "arguments": {"text": "x"}}, 7)
    async with httpx.AsyncClient() as http:
        executions = (await http.get(search.replace("/mcp", "/executions"))).json()
    assert executions == {"once": 1}
