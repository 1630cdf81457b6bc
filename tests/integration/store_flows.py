"""The gateway's core flows and a store failover, run the same way on every Redis topology.

`core_flows`: initialize on one replica, calls on another, a streamed call (SSE) whose
connection drops and resumes on a third replica with Last-Event-ID (its pump is elsewhere: the
tail), the legacy HTTP+SSE bridge across replicas, and a SIGKILL of the pumping replica mid-call.

`failover`: a long streamed call is in flight when `kill_primary` SIGKILLs a Redis primary; a
prober opens new sessions and a readiness poller watches `/readyz` meanwhile. It returns the
figures the README reports and asserts the guarantees: the call ends with its complete result or
a JSON-RPC error for its id (never a hang), no event is lost silently, every failed request is a
503 with a JSON-RPC body and `Retry-After` (never a 500), readiness goes down and comes back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from gateway.store.keys import Keys
from tests.integration.careful_client import CarefulClient, ReceivedEvent, StreamResult, iter_sse
from tests.integration.conftest import GatewayProc
from tests.integration.redis_topologies import LocalCluster, LocalSentinels

GW_ARGS = (
    "--log-format",
    "text",
    "--retry-ms",
    "200",
    # the limit scripts run too (far above what the tests use)
    "--rate-limit",
    "100000",
    "--max-sessions-per-client",
    "1000",
    "--max-streams-per-client",
    "1000",
)
FAILOVER_CALL_STEPS = 25
# Steps spaced well apart: the SDK server (mcp 2.3.0) drops an event produced while a resumed
# stream replays (README, known peer behaviour); a takeover after the failover re-opens one.
FAILOVER_CALL_DELAY = 0.3


class Store:
    """What the tests need to read from the gateway's store on any topology."""

    def __init__(self, client: Any, key_prefix: str) -> None:
        self.client = client  # redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster
        self.key_prefix = key_prefix

    async def pump_pid(self, session_id: str, timeout: float = 10.0) -> int:
        """The pid of the replica holding the lease of the session's open stream."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async for key in self.client.scan_iter(match=f"{self.key_prefix}:{{{session_id}}}:lease:*"):
                holder = await self.client.get(key)
                if holder:
                    return int(holder.decode().split(":")[1])
            await asyncio.sleep(0.05)
        raise AssertionError("no pump lease found")


def assert_exactly_once(progress: list[float], steps: int) -> None:
    counts = Counter(progress)
    assert sorted(counts) == list(range(1, steps + 1)), f"lost: {set(range(1, steps + 1)) - set(counts)}"
    assert all(n == 1 for n in counts.values()), f"duplicated: {[p for p, n in counts.items() if n > 1]}"
    assert progress == sorted(progress), "out of order"


def progress_of(result: StreamResult) -> list[float]:
    return [p["progress"] for p in result.progress()]


def kill_gateway(gateways: list[GatewayProc], pid: int) -> None:
    assert pid in [g.proc.pid for g in gateways], f"pid {pid} is no gateway replica"
    os.kill(pid, signal.SIGKILL)


async def core_flows(gateways: list[GatewayProc], lb_url: str, store: Store) -> None:
    gw1, gw2, gw3 = gateways[:3]
    async with CarefulClient(gw1.url) as client:
        await client.initialize()
        client.url = gw2.url  # the session created on gw1 serves on gw2
        tools = await client.request("tools/list")
        assert {"echo", "add", "slow_count"} <= {t["name"] for t in tools["result"]["tools"]}
        answer = await client.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
        assert answer["result"]["content"][0]["text"] == "5"

        def drop(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
            return event.connection == 0 and event.message is not None and len(events) >= 4

        # gw2 pumps; the resume on gw3 replays, then tails a stream pumped on another replica
        result = await client.call_tool_resumable(
            "slow_count", {"steps": 10, "delay": 0.1}, drop_when=drop, resume_url=gw3.url, resume_delay=0.3
        )
        assert result.connections >= 2
        assert result.response["result"]["content"][0]["text"] == "counted 10"
        assert_exactly_once(progress_of(result), 10)
        assert await client.delete_session() == 200

    await legacy_bridge(gw1, gw2)

    # SIGKILL of the replica pumping a streamed call; the client resumes through the balancer
    async with CarefulClient(lb_url, read_timeout=20) as client:
        await client.initialize()
        sid = client.session_id
        assert sid is not None

        async def killer() -> None:
            await asyncio.sleep(0.8)
            kill_gateway(gateways, await store.pump_pid(sid))

        task = asyncio.ensure_future(killer())
        result = await asyncio.wait_for(
            client.call_tool_resumable("slow_count", {"steps": 16, "delay": 0.15}, resume_timeout=30), 60
        )
        await task
    assert result.response["result"]["content"][0]["text"] == "counted 16"
    assert_exactly_once(progress_of(result), 16)
    assert result.connections >= 2, "the call really resumed after the kill"


async def legacy_bridge(stream_replica: GatewayProc, post_replica: GatewayProc) -> None:
    """2024-11-05 HTTP+SSE: the event stream on one replica, the POSTs on another."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "l"}}}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as http,
        http.stream("GET", f"{stream_replica.base_url}/sse", headers={"accept": "text/event-stream"}) as sse,
    ):
        assert sse.status_code == 200
        events = iter_sse(sse)
        endpoint = await anext(events)
        assert endpoint.event == "endpoint"
        answers: dict[int, Any] = {}
        for message in (init, {"jsonrpc": "2.0", "method": "notifications/initialized"}, call):
            posted = await http.post(f"{post_replica.base_url}{endpoint.data}", json=message)
            assert posted.status_code == 202, posted.text
            if "id" not in message:
                continue
            async for event in events:
                body = json.loads(event.data) if event.event == "message" else None
                if isinstance(body, dict) and body.get("id") == message["id"]:
                    answers[body["id"]] = body
                    break
    assert answers[1]["result"]["serverInfo"]["name"] == "u1"
    assert answers[2]["result"]["content"][0]["text"] == "l"


# ---------------------------------------------------------------- failover


@dataclass
class Probe:
    at: float  # seconds after the kill
    status: int | str
    body: str = ""
    retry_after: str | None = None


@dataclass
class FailoverFigures:
    first_success_after: float  # primary killed -> first successful request on a session it held, s
    first_new_session_after: float  # primary killed -> first new session (initialize + call) that worked, s
    failed_requests: int  # requests that failed after the kill (each a 503 with a JSON-RPC body)
    requests: int  # requests sent after the kill
    call_outcome: str  # "complete" or "error"
    events_lost_silently: int  # must be 0
    events_errored: int  # progress the in-flight call did not get, answered by a JSON-RPC error instead
    readyz_down_seen: bool
    ready_again_after: float  # s after the kill

    def line(self, topology: str) -> str:
        return (
            f"FAILOVER FIGURES [{topology}]: first success on an affected session after "
            f"{self.first_success_after:.2f} s, first new session after {self.first_new_session_after:.2f} s, "
            f"{self.failed_requests} of {self.requests} requests failed (each a 503), call {self.call_outcome}, "
            f"events lost silently {self.events_lost_silently}, errored explicitly {self.events_errored}, "
            f"readyz down seen {self.readyz_down_seen}, ready again after {self.ready_again_after:.2f} s"
        )


class Topology(Protocol):
    def same_home(self, session_a: str, session_b: str) -> bool:
        """Whether both sessions live on the same primary."""

    def kill_primary_of(self, session_id: str) -> None:
        """SIGKILL the primary holding `session_id`."""


def _failed(kind: str, t0: float, exc: Exception) -> Probe:
    return Probe(time.monotonic() - t0, f"{kind}:{type(exc).__name__}", str(exc)[:500])


async def _call_probe(client: CarefulClient, t0: float) -> Probe:
    """A call on an existing session held by the killed primary."""
    try:
        answer = await client.request("tools/call", {"name": "echo", "arguments": {"text": "probe"}})
        assert answer["result"]["content"][0]["text"] == "probe"
    except Exception as exc:  # recorded; the body is checked through the raw probe
        return _failed("call", t0, exc)
    return Probe(time.monotonic() - t0, 200)


async def _session_probe(lb_url: str, t0: float) -> Probe:
    """A new session and one call: the work a fresh client does."""
    async with CarefulClient(lb_url, timeout=10) as client:
        try:
            await client.initialize()
            answer = await client.request("tools/call", {"name": "echo", "arguments": {"text": "probe"}})
            assert answer["result"]["content"][0]["text"] == "probe"
        except Exception as exc:  # recorded
            return _failed("session", t0, exc)
    return Probe(time.monotonic() - t0, 200)


_RAW_IDS = itertools.count(1)


async def _raw_probe(url: str, headers: dict[str, str], t0: float, http: httpx.AsyncClient) -> Probe:
    """tools/list on the affected session, its raw status, body and Retry-After kept: a failure
    must be a 503 with a JSON-RPC error body."""
    # a fresh id each time: MCP forbids reusing one in a session (the gateway answers a reuse with 409)
    message = {"jsonrpc": "2.0", "id": f"raw-{next(_RAW_IDS)}", "method": "tools/list"}
    try:
        r = await http.post(url, json=message, headers=headers)
    except httpx.HTTPError as exc:
        return _failed("raw", t0, exc)
    return Probe(time.monotonic() - t0, r.status_code, r.text[:500], r.headers.get("retry-after"))


class ClusterFailover:
    """Kills the primary that holds a session's slot."""

    def __init__(self, cluster: LocalCluster, keys: Keys) -> None:
        self.cluster = cluster
        self.keys = keys
        self.killed: list[int] = []

    def same_home(self, session_a: str, session_b: str) -> bool:
        home = self.cluster.primary_for
        return home(self.keys.session(session_a)).port == home(self.keys.session(session_b)).port

    def kill_primary_of(self, session_id: str) -> None:
        victim = self.cluster.primary_for(self.keys.session(session_id))
        self.killed.append(victim.port)
        victim.kill()

    def promoted(self) -> bool:
        primaries = {n.port for n in self.cluster.primaries()}
        return self.cluster.healthy() and bool(self.killed) and self.killed[0] not in primaries


class SentinelFailover:
    """Kills the one primary; the Sentinels promote the replica."""

    def __init__(self, setup: LocalSentinels) -> None:
        self.setup = setup

    def same_home(self, session_a: str, session_b: str) -> bool:
        return True  # one primary holds everything

    def kill_primary_of(self, session_id: str) -> None:
        self.setup.primary.kill()

    def promoted(self) -> bool:
        return self.setup.master_port() == self.setup.replica.port


async def failover(gateways: list[GatewayProc], lb_url: str, topology: Topology) -> FailoverFigures:
    steps = FAILOVER_CALL_STEPS
    async with CarefulClient(lb_url, read_timeout=20) as caller, CarefulClient(lb_url, timeout=10) as prober:
        await caller.initialize()
        assert caller.session_id is not None
        for _ in range(50):  # a second session on the same primary, to probe the failed-over data
            prober.session_id, prober.initialize_result = None, None
            await prober.initialize()
            assert prober.session_id is not None
            if topology.same_home(caller.session_id, prober.session_id):
                break
        else:
            raise AssertionError("no second session landed on the caller's primary")
        call = asyncio.ensure_future(
            asyncio.wait_for(
                caller.call_tool_resumable(
                    "slow_count", {"steps": steps, "delay": FAILOVER_CALL_DELAY}, resume_timeout=40
                ),
                90,  # a hang fails the test
            )
        )
        await asyncio.sleep(1.0)  # the call streams progress
        assert not call.done(), "the call ended before the failover"
        topology.kill_primary_of(caller.session_id)
        t0 = time.monotonic()
        calls: list[Probe] = []
        sessions: list[Probe] = []
        raw: list[Probe] = []
        ready: list[tuple[float, int]] = []
        stop = asyncio.Event()

        async def probing() -> None:
            async with httpx.AsyncClient(timeout=10) as http:
                while not stop.is_set():
                    calls.append(await _call_probe(prober, t0))
                    sessions.append(await _session_probe(lb_url, t0))
                    raw.append(await _raw_probe(lb_url, prober.headers(), t0, http))
                    await asyncio.sleep(0.05)

        async def readiness() -> None:
            async with httpx.AsyncClient(timeout=5) as http:
                while not stop.is_set():
                    codes = [
                        (await http.get(f"{gw.base_url}/readyz")).status_code for gw in gateways if gw.proc.alive()
                    ]
                    ready.append((time.monotonic() - t0, max(codes)))
                    await asyncio.sleep(0.1)

        watchers = [asyncio.ensure_future(probing()), asyncio.ensure_future(readiness())]
        try:
            result = await call
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:  # until every kind of request works and readiness is back
                if _first_ok(calls) and _first_ok(sessions) and ready and ready[-1][1] == 200:
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*watchers)

    first_call, first_session = _first_ok(calls), _first_ok(sessions)
    assert first_call is not None and first_session is not None, f"not recovered within 40 s: {calls[-3:]}"
    for p in [q for q in raw if q.status != 200]:
        assert p.status == 503, f"a failed request must be a 503 with a JSON-RPC body, got {p}"
        body = json.loads(p.body)
        assert body["jsonrpc"] == "2.0" and body["error"]["message"] and str(body["id"]).startswith("raw-"), p
        assert p.retry_after, f"503 without Retry-After: {p}"
    everything = [*calls, *sessions, *raw]
    assert not [p for p in everything if "500" in str(p.status) or "Traceback" in p.body], everything

    response = result.response
    progress = progress_of(result)
    assert response.get("id") is not None and ("result" in response or "error" in response), response
    assert len(progress) == len(set(progress)) and progress == sorted(progress), f"duplicated/out of order: {progress}"
    if "result" in response:
        assert response["result"]["content"][0]["text"] == f"counted {steps}"
        outcome, errored, lost_silently = "complete", 0, steps - len(progress)  # complete = every event
        if lost_silently:
            print(f"progress received: {progress}; connections {result.connections}, statuses {result.statuses}")
    else:
        assert response["error"]["code"] == -32000, response
        outcome, errored, lost_silently = "error", steps - len(progress), 0
    down = [t for t, code in ready if code != 200]
    back = [t for t, code in ready if code == 200 and down and t > down[0]]
    return FailoverFigures(
        first_success_after=first_call,
        first_new_session_after=first_session,
        failed_requests=len([p for p in everything if p.status != 200]),
        requests=len(everything),
        call_outcome=outcome,
        events_lost_silently=lost_silently,
        events_errored=errored,
        readyz_down_seen=bool(down),
        ready_again_after=back[0] if back else float("nan"),
    )


def _first_ok(probes: list[Probe]) -> float | None:
    return next((p.at for p in probes if p.status == 200), None)
