"""Policy, quotas and audit through three replicas behind HAProxy, with real tokens and a real SDK
upstream: two principals with different rights, in both eras; a quota held across the fleet; a
policy file changed mid-run; the audit trail counted against the requests sent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from gateway.config import Settings
from gateway.http.app import create_app
from tests.asgi_server import serve
from tests.integration.careful_client import CarefulClient
from tests.integration.conftest import GatewayProc, StartGateways, StartLoadBalancer, StartSdkUpstream
from tests.integration.procs import ProcessGroup
from tests.integration.test_failover import GW_ARGS, kill_pid, pump_pid
from tests.integration.test_response_cache import start_upstream as start_cache_upstream

ISSUER = "https://issuer.test"
AUDIENCE = "https://gateway.test/mcp"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = (
    KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
)
DENY_WHOAMI = 'mcp.tool.name == "whoami" && !("admin" in jwt.roles)'
POLICY = f"""
deny:
  - '{DENY_WHOAMI}'
allow:
  - 'mcp.method != "tools/call"'
  - 'jwt.sub == "alice"'
  - 'mcp.tool.name == "echo"'
limits:
  - when: 'mcp.tool.name == "add"'
    key: 'jwt.sub'
    rate: 1/h
    burst: 4
"""
BOB_MAY_ADD = POLICY.replace("""  - 'mcp.tool.name == "echo"'""", """  - 'mcp.tool.name in ["echo", "add"]'""")


def token(sub: str, roles: list[str]) -> str:
    claims = {"iss": ISSUER, "sub": sub, "aud": AUDIENCE, "exp": int(time.time()) + 600, "roles": roles}
    return jwt.encode(claims, KEY, algorithm="RS256")


ALICE = token("alice", ["admin"])
BOB = token("bob", [])


@pytest.fixture(autouse=True)
def fresh_tokens() -> None:
    """Tokens minted afresh for each test: a full run reaches these tests long after import, past a
    token's 600 s."""
    global ALICE, BOB
    ALICE, BOB = token("alice", ["admin"]), token("bob", [])


def meta() -> dict[str, Any]:
    return {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}


class Modern:
    """A 2026-07-28 (stateless) client of one principal: raw JSON-RPC over httpx."""

    def __init__(self, client: httpx.AsyncClient, url: str, bearer: str) -> None:
        self.client, self.url, self.bearer = client, url, bearer
        self.ids = 0

    async def send(self, method: str, params: dict[str, Any], name: str | None = None) -> httpx.Response:
        self.ids += 1
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.bearer}",
            "MCP-Protocol-Version": MODERN,
            "Mcp-Method": method,
            **({"Mcp-Name": name} if name else {}),
        }
        body = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": {**params, "_meta": meta()}}
        return await self.client.post(self.url, headers=headers, json=body)

    async def call(self, tool: str, arguments: dict[str, Any]) -> httpx.Response:
        return await self.send("tools/call", {"name": tool, "arguments": arguments}, tool)

    async def tools(self) -> list[str]:
        r = await self.send("tools/list", {})
        assert r.status_code == 200, r.text
        return sorted(t["name"] for t in answer(r)["result"]["tools"])


class Legacy:
    """A 2025-11-25 (sessionful) client of one principal."""

    def __init__(self, client: httpx.AsyncClient, url: str, bearer: str) -> None:
        self.client, self.url, self.bearer = client, url, bearer
        self.ids = 0
        self.session = ""

    def headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.bearer}",
            "MCP-Protocol-Version": LEGACY,
        }
        return {**headers, "Mcp-Session-Id": self.session} if self.session else headers

    async def send(self, method: str, params: dict[str, Any]) -> httpx.Response:
        self.ids += 1
        body = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}
        return await self.client.post(self.url, headers=self.headers(), json=body)

    async def start(self) -> None:
        info = {"name": "t", "version": "1"}
        r = await self.send("initialize", {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": info})
        assert r.status_code == 200, r.text
        self.session = r.headers["mcp-session-id"]
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await self.client.post(self.url, headers=self.headers(), json=note)).status_code == 202

    async def tools(self) -> list[str]:
        r = await self.send("tools/list", {})
        assert r.status_code == 200, r.text
        return sorted(t["name"] for t in answer(r)["result"]["tools"])


def answer(r: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC response in a JSON or SSE answer."""
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        datas = [line[5:].strip() for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]
        messages = [json.loads(d) for d in datas]
        found: dict[str, Any] = next(m for m in messages if "id" in m and ("result" in m or "error" in m))
        return found
    return dict(r.json())


def start(
    tmp_path: Path,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    key_prefix: str,
    *extra: str,
) -> tuple[list[GatewayProc], Path]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    pem = tmp_path / "issuer.pem"
    pem.write_text(PUBLIC_PEM)
    upstream = sdk_upstream(event_store=True)
    auth = ["--auth-issuer", ISSUER, "--auth-public-key", f"@{pem}", "--auth-audience", AUDIENCE]
    args = [*GW_ARGS, *auth, "--policy", str(policy), "--audit", "redis", *extra]
    return gateway_cluster(3, {"default": upstream}, key_prefix, args), policy


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


async def audit_records(redis_url: str, key_prefix: str) -> list[dict[str, Any]]:
    client = aioredis.from_url(redis_url)
    try:
        entries = await client.xrange(f"{key_prefix}:audit") or []
        return [json.loads(fields[b"r"]) for _, fields in entries if fields is not None]
    finally:
        await client.aclose()


async def test_two_principals_in_both_eras_a_fleet_quota_and_the_audit_trail(
    tmp_path: Path,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    gateways, _ = start(tmp_path, sdk_upstream, gateway_cluster, key_prefix)
    lb = load_balancer(gateways)
    sent = 0
    async with httpx.AsyncClient(timeout=20) as http:
        # lists: alice sees every tool, bob the ones he may call (the SDK answers in SSE: filtered there)
        alice, bob = Modern(http, lb, ALICE), Modern(http, lb, BOB)
        every = await alice.tools()
        assert {"add", "echo", "whoami", "slow_count"} <= set(every)
        for _ in range(3):  # one list per replica: a cached list is never served to the other principal
            assert await bob.tools() == ["echo"]
            assert await alice.tools() == every
        sent += 7
        # denied calls in the stateless era: 403, the rule named, nothing relayed
        r = await bob.call("add", {"a": 1, "b": 2})
        assert r.status_code == 403 and r.json()["error"]["data"]["rule"] == "default"
        assert r.json()["id"] == bob.ids and "policy rule" in r.json()["error"]["message"]
        r = await bob.call("whoami", {})
        assert r.status_code == 403 and r.json()["error"]["data"]["rule"] == DENY_WHOAMI
        assert (await bob.call("echo", {"text": "hi"})).status_code == 200
        assert (await alice.call("whoami", {})).status_code == 200
        sent += 4
        # the same in the sessionful era
        alice2, bob2 = Legacy(http, lb, ALICE), Legacy(http, lb, BOB)
        await alice2.start()
        await bob2.start()
        assert await bob2.tools() == ["echo"]
        assert await alice2.tools() == every
        r = await bob2.send("tools/call", {"name": "whoami", "arguments": {}})
        assert r.status_code == 403 and r.json()["error"]["data"]["rule"] == DENY_WHOAMI
        assert r.json()["id"] == bob2.ids
        r = await alice2.send("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
        assert r.status_code == 200 and answer(r)["result"]["content"][0]["text"] == "5"
        sent += 2 + 4  # two initializes, two lists, two calls
        # the fleet's quota: burst 4, whichever replica serves each call (round robin)
        codes = [(await alice.call("add", {"a": 1, "b": 1})).status_code for _ in range(9)]
        assert codes.count(200) == 3 and codes.count(429) == 6  # alice's 4th `add` was the sessionful one
        limited = await alice.call("add", {"a": 1, "b": 1})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert limited.json()["error"]["data"]["rule"].startswith("limits[0]")
        sent += 10
        metrics = "".join([(await http.get(gw.metrics_url)).text for gw in gateways])
        assert 'mcpgw_quota_rejections_total{rule="limits[0]' in metrics
        assert 'mcpgw_policy_decisions_total{result="deny",rule="default"}' in metrics
    # the audit trail: one record per decided request (batched writes: wait for the last ones)
    for _ in range(50):
        records = await audit_records(redis_url, key_prefix)
        if len(records) >= sent:
            break
        await asyncio.sleep(0.1)
    assert len(records) == sent
    assert {r["decision"] for r in records} == {"allow", "deny", "limited"}
    assert sum(r["decision"] == "limited" for r in records) == 7
    assert all(BOB not in json.dumps(r) and ALICE not in json.dumps(r) for r in records)
    assert {r["principal"] for r in records} == {f"{ISSUER}|alice", f"{ISSUER}|bob"}
    assert {r["era"] for r in records} == {MODERN, LEGACY}
    # the operator's reader: `mcp-gateway audit`
    command = [sys.executable, "-m", "gateway", "audit", "--redis-url", redis_url, "--key-prefix", key_prefix]
    done = await asyncio.to_thread(run, [*command, "--json", "--principal", "bob"])
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and lines == [r for r in records if r["principal"] == f"{ISSUER}|bob"]
    done = await asyncio.to_thread(run, [*command, "--since", "1h"])
    assert len(done.stdout.splitlines()) == sent and "rule=default" in done.stdout


async def test_a_policy_change_reaches_every_replica(
    tmp_path: Path,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    key_prefix: str,
) -> None:
    gateways, policy = start(tmp_path, sdk_upstream, gateway_cluster, key_prefix)
    async with httpx.AsyncClient(timeout=20) as http:
        bobs = [Modern(http, gw.url, BOB) for gw in gateways]
        for bob in bobs:
            assert (await bob.call("add", {"a": 1, "b": 1})).status_code == 403
        policy.write_text("deny: [")  # a broken file is refused: the policy in force stays
        await asyncio.sleep(1.0)  # two polls of every replica
        for bob in bobs:
            assert (await bob.call("add", {"a": 1, "b": 1})).status_code == 403
        policy.write_text(BOB_MAY_ADD)
        for bob in bobs:
            for _ in range(30):  # bounded: the replicas poll the file twice a second
                r = await bob.call("add", {"a": 1, "b": 1})
                if r.status_code != 403:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200, r.text
        for gw in gateways:
            text = (await http.get(gw.metrics_url)).text
            assert 'mcpgw_policy_reloads_total{result="refused"} 1.0' in text


async def test_the_audit_trail_is_complete_across_a_sigkill(
    tmp_path: Path,
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
    redis_url: str,
) -> None:
    """The record is written where the answer starts: a call whose stream moves to another replica
    after a SIGKILL keeps its one record, and its replay (answered from the replay store) has its own."""
    gateways, _ = start(tmp_path, sdk_upstream, gateway_cluster, key_prefix)
    lb = load_balancer(gateways)
    steps = 16
    http = httpx.AsyncClient(timeout=httpx.Timeout(30, read=20), headers={"Authorization": f"Bearer {ALICE}"})
    async with http, CarefulClient(lb, http=http) as client:
        await client.initialize()
        sid = client.session_id
        assert sid is not None

        async def killer() -> int:
            await asyncio.sleep(0.8)
            pid = await pump_pid(redis_url, key_prefix, sid)
            kill_pid(gateways, pid)
            return pid

        kill = asyncio.ensure_future(killer())
        result = await client.call_tool_resumable("slow_count", {"steps": steps, "delay": 0.15}, resume_timeout=30)
        killed = await kill
        assert result.response["result"]["content"][0]["text"] == f"counted {steps}"
        call_id = result.response["id"]
        replay = await client.call_tool_resumable("slow_count", {"steps": steps, "delay": 0.15}, request_id=call_id)
        assert replay.response["result"]["content"][0]["text"] == f"counted {steps}"
    for _ in range(50):
        records = await audit_records(redis_url, key_prefix)
        if len(records) >= 3:
            break
        await asyncio.sleep(0.1)
    assert [r["method"] for r in records] == ["initialize", "tools/call", "tools/call"]  # nothing lost, no double
    calls = [r for r in records if r["request_id"] == call_id]
    assert len(calls) == 2 and all(r["outcome"] == "ok" and r["decision"] == "allow" for r in calls)
    assert f":{killed}:" in calls[0]["replica"]  # written by the replica that took the call, before it died


async def test_the_response_cache_serves_each_principal_its_own_filtered_list(
    procs: ProcessGroup, gateway_cluster: StartGateways, key_prefix: str, tmp_path: Path
) -> None:
    """A cacheable `tools/list` (public, ttlMs) is kept whole: bob's filtered view of a cached answer
    is never what alice gets, and the other way round; the upstream answered once."""
    upstream = start_cache_upstream(procs)
    policy = tmp_path / "policy.yaml"
    policy.write_text("allow: ['mcp.method != \"tools/call\"', 'jwt.sub == \"alice\"']")
    pem = tmp_path / "issuer.pem"
    pem.write_text(PUBLIC_PEM)
    auth = ["--auth-issuer", ISSUER, "--auth-public-key", f"@{pem}", "--auth-audience", AUDIENCE]
    gateways = gateway_cluster(3, {"default": upstream.url}, key_prefix, [*GW_ARGS, *auth, "--policy", str(policy)])
    async with httpx.AsyncClient(timeout=20) as http:
        shown = []
        for i, who in enumerate([ALICE, BOB, ALICE, BOB, ALICE, BOB]):
            tools = await Modern(http, gateways[i % 3].url, who).tools()
            shown.append(tools)
    assert shown == [["tool-v0"], [], ["tool-v0"], [], ["tool-v0"], []]
    assert await upstream.count("tools/list") == 1  # every other answer came from the cache


async def test_a_legacy_sse_client_is_decided_filtered_and_audited(
    sdk_upstream: StartSdkUpstream, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """The 2024-11-05 HTTP+SSE bridge forwards through `/mcp` in process: the same decision applies,
    the refusal arrives on the client's `/sse` stream as the JSON-RPC error."""
    upstream = sdk_upstream(event_store=True, retry_interval=100)
    policy = tmp_path / "policy.yaml"
    policy.write_text("deny: ['mcp.tool.name == \"whoami\"']")
    settings = Settings(
        upstream=[upstream], redis_url=redis_url, key_prefix=key_prefix, policy=str(policy), audit=["redis"]
    )
    async with serve(create_app(settings)) as replica:
        async with sse_client(f"{replica}/sse") as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            names = {tool.name for tool in (await session.list_tools()).tools}
            assert "echo" in names and "whoami" not in names
            with pytest.raises(MCPError, match="Forbidden by policy rule"):
                await session.call_tool("whoami", {})
            assert (await session.call_tool("echo", {"text": "hi"})).content[0].text == "hi"  # type: ignore[union-attr]
        for _ in range(50):
            records = await audit_records(redis_url, key_prefix)
            if len(records) >= 4:
                break
            await asyncio.sleep(0.1)
    assert [(r["method"], r["decision"]) for r in records] == [
        ("initialize", "allow"),
        ("tools/list", "allow"),
        ("tools/call", "deny"),
        ("tools/call", "allow"),
    ]
