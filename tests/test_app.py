"""Component tests: the gateway app on real uvicorn, real Redis, a scripted in-process upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.http.app import create_app
from gateway.wire import protocol
from tests.asgi_server import serve
from tests.gateway_env import ACCEPT, HEADERS, Env, call, init_body, parse_sse, running_gateway
from tests.scripted_upstream import Behaviour, ScriptedUpstream


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
async def env(redis_url: str, key_prefix: str, behaviour: Behaviour) -> AsyncIterator[Env]:
    async with running_gateway(
        behaviour=behaviour,
        pools=("default={}", "other@expire={}"),
        redis_url=redis_url,
        key_prefix=key_prefix,
        lease_ttl=0.5,
        keepalive_interval=0.5,
        stream_idle_timeout=5,
    ) as env:
        yield env


async def test_healthz_and_readyz(env: Env) -> None:
    assert (await env.client.get(f"{env.url}/healthz")).status_code == 200
    ready = await env.client.get(f"{env.url}/readyz")
    assert ready.status_code == 200 and ready.json()["pools"] == ["default", "other"]


async def test_initialize_issues_own_session_id(env: Env) -> None:
    sid = await env.initialize()
    assert protocol.valid_session_id(sid)
    assert sid not in env.upstream.sessions  # never the upstream's id
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("echo", x=1))
    assert r.status_code == 200
    assert r.json() == {"jsonrpc": "2.0", "id": 2, "result": {"echo": {"x": 1}}}
    # the upstream saw its own session id, not the gateway's
    assert env.upstream.headers_seen[-1]["mcp-session-id"] in env.upstream.sessions


async def test_notification_gets_202(env: Env) -> None:
    sid = await env.initialize()
    r = await env.client.post(
        env.mcp, headers=env.headers(sid), json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert r.status_code == 202 and r.content == b""


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"Content-Type": "text/plain", "Accept": ACCEPT}, b"{}", 415, -32600),
        ({"Content-Type": "application/json", "Accept": "application/json"}, b"{}", 406, -32600),
        (HEADERS, b"{not json", 400, -32700),
        (HEADERS, b'{"jsonrpc":"1.0","id":1,"method":"x"}', 400, -32600),
        ({**HEADERS, "MCP-Protocol-Version": "1999-01-01"}, b"{}", 400, -32022),
        ({**HEADERS, "Origin": "http://evil.example"}, b"{}", 403, -32600),
    ],
)
async def test_bad_input_is_spec_shaped(env: Env, headers: dict[str, str], body: bytes, status: int, code: int) -> None:
    r = await env.client.post(env.mcp, headers=headers, content=body)
    assert r.status_code == status
    payload = r.json()
    assert payload["jsonrpc"] == "2.0" and payload["error"]["code"] == code
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("body", "expected_id"),
    [
        (b'{"jsonrpc":"2.0","id":"r-7","method":"tools/list"}', "r-7"),
        (b'{"jsonrpc":"2.0","id":41,"method":"tools/list"}', 41),
        (b'{"jsonrpc":"2.0","id":true,"method":"tools/list"}', None),
        (b"[1, 2]", None),
        (b"{broken", None),
    ],
)
async def test_unsupported_version_echoes_the_request_id(env: Env, body: bytes, expected_id: object) -> None:
    # 2026-07-28 basic/transports: the error answer names the request; code -32022 lists what is supported
    r = await env.client.post(env.mcp, headers={**HEADERS, "MCP-Protocol-Version": "2099-01-01"}, content=body)
    assert r.status_code == 400
    payload = r.json()
    assert payload["id"] == expected_id
    assert payload["error"]["code"] == -32022
    assert payload["error"]["data"]["requested"] == "2099-01-01"
    assert payload["error"]["data"]["supported"] == ["2026-07-28"]  # sessionless, not initialize


async def test_unsupported_version_on_initialize_lists_every_era(env: Env) -> None:
    headers = {**HEADERS, "MCP-Protocol-Version": "2099-01-01"}
    r = await env.client.post(env.mcp, headers=headers, json=init_body(rid=5))
    assert r.status_code == 400 and r.json()["id"] == 5
    assert r.json()["error"]["data"]["supported"] == [*protocol.SESSIONFUL_VERSIONS, *protocol.STATELESS_VERSIONS]


async def test_missing_and_unknown_session(env: Env) -> None:
    r = await env.client.post(env.mcp, headers=HEADERS, json=call("echo"))
    assert r.status_code == 400 and r.json()["id"] == 2
    for bogus in ("nope", "A" * 32, "x" * 500):
        r = await env.client.post(env.mcp, headers={**HEADERS, "Mcp-Session-Id": bogus}, json=call("echo"))
        assert r.status_code == 404, bogus


async def test_session_of_other_pool_is_404(env: Env) -> None:
    sid = await env.initialize()
    r = await env.client.post(f"{env.mcp}/other", headers=env.headers(sid), json=call("echo"))
    assert r.status_code == 404


async def test_oversize_body_413(env: Env) -> None:
    r = await env.client.post(env.mcp, headers=HEADERS, content=b"[" + b" " * (5 * 1024 * 1024) + b"]")
    assert r.status_code == 413


async def test_batches_only_in_2025_03_26(env: Env) -> None:
    sid = await env.initialize("2025-03-26")
    batch = [call("echo", rid=5), call("echo", rid=6)]
    r = await env.client.post(env.mcp, headers=env.headers(sid, "2025-03-26"), json=batch)
    assert r.status_code == 200 and [m["id"] for m in r.json()] == [5, 6]
    r = await env.client.post(env.mcp, headers=env.headers(sid, "2025-06-18"), json=batch)
    assert r.status_code == 400


async def test_delete_removes_session(env: Env) -> None:
    sid = await env.initialize()
    r = await env.client.delete(env.mcp, headers=env.headers(sid))
    assert r.status_code == 200
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("echo"))
    assert r.status_code == 404


async def test_upstream_forgetting_session_reinit_is_transparent(env: Env) -> None:
    sid = await env.initialize()
    env.upstream.sessions.clear()  # the upstream restarted and forgot every session
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("echo", x=3))
    assert r.status_code == 200 and r.json()["result"]["echo"] == {"x": 3}
    assert len(env.upstream.sessions) == 1  # exactly one new upstream session
    methods = [m.get("method") for m in env.upstream.requests[-3:]]
    assert methods == ["initialize", "notifications/initialized", "tools/call"]


async def test_upstream_forgetting_session_expire_gives_404(env: Env) -> None:
    r = await env.client.post(f"{env.mcp}/other", headers=HEADERS, json=init_body())
    sid = r.headers["mcp-session-id"]
    env.upstream.sessions.clear()
    r = await env.client.post(f"{env.mcp}/other", headers=env.headers(sid), json=call("echo"))
    assert r.status_code == 404
    r = await env.client.post(f"{env.mcp}/other", headers=env.headers(sid), json=call("echo"))
    assert r.status_code == 404  # our record is gone too: the client re-initializes


async def test_concurrent_reinit_creates_one_upstream_session(env: Env) -> None:
    sid = await env.initialize()
    env.upstream.sessions.clear()
    results = await asyncio.gather(
        *(env.client.post(env.mcp, headers=env.headers(sid), json=call("echo", rid=10 + i)) for i in range(8))
    )
    assert [r.status_code for r in results] == [200] * 8
    assert len(env.upstream.sessions) == 1
    assert sum(1 for m in env.upstream.requests if m.get("method") == "initialize") == 2


async def test_sse_answer_gets_priming_and_gateway_ids(env: Env) -> None:
    sid = await env.initialize("2025-11-25")
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("stream", count=3))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
    events = parse_sse(r.text)
    assert events[0]["data"] == "" and events[0]["id"].endswith(".0") and "retry" in events[0]
    stream = events[0]["id"].split(".")[0]
    assert [e["id"] for e in events[1:]] == [f"{stream}.{n}" for n in range(1, 5)]
    assert json.loads(events[-1]["data"])["id"] == 2


async def test_no_priming_before_2025_11_25(env: Env) -> None:
    sid = await env.initialize("2025-06-18")
    r = await env.client.post(env.mcp, headers=env.headers(sid, "2025-06-18"), json=call("stream", count=2))
    events = parse_sse(r.text)
    assert all(e.get("data") for e in events) and len(events) == 3


async def test_resume_replays_exactly_after_cursor(env: Env) -> None:
    sid = await env.initialize()
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("stream", count=5))
    events = parse_sse(r.text)
    cursor = events[2]["id"]
    r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": cursor})
    assert r.status_code == 200
    priming, *replayed = parse_sse(r.text)
    assert priming["id"] == cursor and not priming.get("data")  # 2025-11-25: primed with the client's cursor
    assert [e["id"] for e in replayed] == [e["id"] for e in events[3:]]


async def test_resume_bad_cursor_and_foreign_stream(env: Env) -> None:
    sid = await env.initialize()
    other = await env.initialize()
    r = await env.client.post(env.mcp, headers=env.headers(other), json=call("stream", count=1))
    foreign = parse_sse(r.text)[1]["id"]
    r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": "garbage"})
    assert r.status_code == 400
    r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": foreign})
    assert r.status_code == 404 and "data" not in r.text.split("error")[0]


async def test_client_disconnect_does_not_cancel(env: Env) -> None:
    sid = await env.initialize()
    first_id = None
    async with env.client.stream(
        "POST", env.mcp, headers=env.headers(sid), json=call("stream", count=6, delay=0.1)
    ) as r:
        async for line in r.aiter_lines():
            if line.startswith("id:") and not line.endswith(".0"):
                first_id = line[3:].strip()
                break
    assert first_id is not None
    await asyncio.sleep(1.0)  # the pump keeps reading while nobody listens
    r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": first_id})
    events = [e for e in parse_sse(r.text) if e.get("data")]
    assert len(events) == 6 and json.loads(events[-1]["data"])["result"]["echo"]["count"] == 6


@pytest.mark.parametrize("behaviour", [Behaviour(event_ids=False)])
async def test_upstream_closing_without_ids_errors_pending(env: Env) -> None:
    sid = await env.initialize()
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("close_early", count=5, close_after=2))
    events = parse_sse(r.text)
    last = json.loads(events[-1]["data"])
    assert last["id"] == 2 and last["error"]["code"] == -32000


async def test_upstream_polling_close_is_followed_for_older_clients(env: Env) -> None:
    # 2025-06-18 clients know nothing of polling: the gateway resumes the upstream behind an open stream
    sid = await env.initialize("2025-06-18")
    r = await env.client.post(
        env.mcp,
        headers=env.headers(sid, "2025-06-18"),
        json=call("close_early", count=5, close_after=2, delay=0.05),
    )
    events = [e for e in parse_sse(r.text) if e.get("data")]
    progress = [json.loads(e["data"])["params"]["progress"] for e in events[:-1]]
    assert progress == [1, 2, 3, 4, 5]
    assert json.loads(events[-1]["data"])["result"]["echo"]["count"] == 5


async def test_upstream_polling_close_is_passed_on_to_2025_11_25_clients(env: Env) -> None:
    # 2025-11-25 transports §Resumability: the client sees the close (with a retry hint) and polls
    # with Last-Event-ID; the gateway kept pumping meanwhile, so nothing is lost or repeated.
    sid = await env.initialize()
    r = await env.client.post(
        env.mcp, headers=env.headers(sid), json=call("close_early", count=5, close_after=2, delay=0.05)
    )
    first = parse_sse(r.text)
    assert "retry" in first[-1] and "data" not in first[-1]  # ended by the upstream's close
    got = [e for e in first if e.get("data")]
    assert 0 < len(got) < 6
    last_id = [e["id"] for e in first if "id" in e][-1]
    r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": last_id})
    got += [e for e in parse_sse(r.text) if e.get("data")]
    progress = [json.loads(e["data"])["params"]["progress"] for e in got[:-1]]
    assert progress == [1, 2, 3, 4, 5]
    assert json.loads(got[-1]["data"])["result"]["echo"]["count"] == 5


async def test_standalone_get_405_passes_through(redis_url: str, key_prefix: str) -> None:
    async with running_gateway(
        behaviour=Behaviour(get_stream=False), redis_url=redis_url, key_prefix=key_prefix, timeout=5
    ) as env:
        sid = await env.initialize()
        r = await env.client.get(env.mcp, headers={**env.headers(sid), "Accept": "text/event-stream"})
        assert r.status_code == 405


async def test_resuming_a_standalone_stream_that_ended_listens_afresh(redis_url: str, key_prefix: str) -> None:
    """The upstream closed its GET stream with no event id: the gateway's stream ends. A client
    that resumes it (it has every event) gets a new standalone stream from a fresh upstream GET,
    not an empty stream it would resume again and again."""
    async with running_gateway(
        behaviour=Behaviour(get_closes=True), redis_url=redis_url, key_prefix=key_prefix, timeout=5
    ) as env:
        sid = await env.initialize()
        get = {**env.headers(sid), "Accept": "text/event-stream"}
        first = parse_sse((await env.client.get(env.mcp, headers=get)).text)
        ended = first[0]["id"]  # the priming event: stream S, cursor 0; the stream ended after it
        resumed = parse_sse((await env.client.get(env.mcp, headers={**get, "Last-Event-ID": ended})).text)
        fresh = resumed[0]["id"]
        assert fresh.rsplit(".", 1)[0] != ended.rsplit(".", 1)[0]  # another stream, primed from 0
        upstream_gets = [h for h in env.upstream.headers_seen if h.get("accept") == "text/event-stream"]
        assert len(upstream_gets) == 2 and all("last-event-id" not in h for h in upstream_gets)


async def test_keepalive_on_idle_stream(env: Env) -> None:
    sid = await env.initialize()
    seen = b""
    async with env.client.stream("GET", env.mcp, headers={**env.headers(sid), "Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        async for chunk in r.aiter_raw():
            seen += chunk
            if b": keep-alive" in seen:
                break
    assert b": keep-alive" in seen


async def test_stateless_era_forwards_without_session(env: Env) -> None:
    body = call("echo", rid=9, x=2)
    headers = {
        **HEADERS,
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "echo",
        "Mcp-Custom-Thing": "kept",
    }
    env.upstream.sessions.add("")  # the scripted upstream checks sessions; stateless sends none
    r = await env.client.post(env.mcp, headers=headers, json=body)
    assert r.status_code == 200 and r.json()["id"] == 9
    assert "mcp-session-id" not in r.headers
    assert env.upstream.headers_seen[-1]["mcp-custom-thing"] == "kept"
    bad = {**headers, "Mcp-Name": "other"}
    r = await env.client.post(env.mcp, headers=bad, json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32020


@pytest.fixture
async def small_env(redis_url: str, key_prefix: str) -> AsyncIterator[Env]:
    async with running_gateway(redis_url=redis_url, key_prefix=key_prefix, stream_maxlen=10, lease_ttl=0.5) as env:
        yield env


async def test_trimmed_cursor_is_a_gap_not_a_skip(small_env: Env) -> None:
    env = small_env
    sid = await env.initialize()
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("stream", count=300, delay=0.003))
    events = parse_sse(r.text)
    assert len(events) == 302  # the live connection kept up: priming, 300 progress, the answer
    early = events[1]["id"]  # seq 1, long trimmed (MAXLEN ~ 10)
    r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": early})
    replay = parse_sse(r.text)
    # no silent skip to the newest events: only the retained final answer, no progress after a hole
    assert len(replay) == 1 and json.loads(replay[0]["data"])["result"]["echo"]["count"] == 300


async def test_gap_with_pending_request_answers_error(small_env: Env, redis_url: str, key_prefix: str) -> None:
    env = small_env
    sid = await env.initialize()
    cursor_id = None
    async with env.client.stream("POST", env.mcp, headers=env.headers(sid), json=call("hang")) as r:
        async for line in r.aiter_lines():
            if line.startswith("id:"):
                cursor_id = line[3:].strip()
                break
    assert cursor_id is not None
    # the store loses the stream (restart / failover): resume must answer, not hang
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    async for key in client.scan_iter(match=f"{key_prefix}:*:[xm]:*"):
        await client.delete(key)
    await client.aclose()
    r = await env.client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": cursor_id})
    replay = parse_sse(r.text)
    assert len(replay) == 1
    answer = json.loads(replay[0]["data"])
    assert answer["id"] == 2 and answer["error"]["code"] == -32000


async def test_embedded_store_smoke() -> None:
    """No Redis URL: the embedded in-process store serves sessions, streams and resumes."""
    async with running_gateway(redis_url=None) as env:
        client = env.client
        sid = await env.initialize()
        r = await client.post(env.mcp, headers=env.headers(sid), json=call("echo", x=1))
        assert r.json()["result"]["echo"] == {"x": 1}
        r = await client.post(env.mcp, headers=env.headers(sid), json=call("stream", rid=3, count=4))
        events = parse_sse(r.text)
        assert len(events) == 6
        r = await client.get(env.mcp, headers={**env.headers(sid), "Last-Event-ID": events[2]["id"]})
        assert [e["id"] for e in parse_sse(r.text)][1:] == [e["id"] for e in events[3:]]  # after the priming event


async def test_the_process_owners_hook_runs_once_everything_is_built() -> None:
    """`create_app(on_started=...)`: the CLI tunes the process there (cli.tune_gc), after start-up."""
    seen: list[bool] = []
    apps: list[Any] = []
    async with serve(ScriptedUpstream(Behaviour())) as upstream_url:
        settings = Settings(upstream=[f"default={upstream_url}/mcp"], drain_timeout=1.0, metrics_port=0)
        apps.append(create_app(settings, on_started=lambda: seen.append(hasattr(apps[0].state, "gateway"))))
        async with serve(apps[0]):
            assert seen == [True]
    assert seen == [True]


@pytest.mark.parametrize("sse", [False, True])
async def test_every_set_cookie_line_of_the_upstream_reaches_the_client(env: Env, sse: bool) -> None:
    """RFC 9110 §5.3: Set-Cookie lines are never folded into one; the relay kept only the last."""
    sid = await env.initialize()
    r = await env.client.post(env.mcp, headers=env.headers(sid), json=call("cookies", sse=sse))
    assert r.status_code == 200, r.text
    assert r.headers.get_list("set-cookie") == ["lb=1; Path=/", "lbcors=1; Path=/; SameSite=None"]
    answer = parse_sse(r.text)[-1]["data"] if sse else r.text
    assert json.loads(answer)["result"]["echo"] == {"sse": sse}


def test_forward_authorization_names_known_pools_only() -> None:
    upstream = ["default=http://127.0.0.1:9/mcp"]
    create_app(Settings(upstream=upstream, forward_authorization=["*"]))
    create_app(Settings(upstream=upstream, forward_authorization=["default"]))
    with pytest.raises(ConfigError, match="unknown pool"):
        create_app(Settings(upstream=upstream, forward_authorization=["defualt"]))
