"""Legacy HTTP+SSE clients (2024-11-05) through `gateway/eras/legacy_sse.py`, with the SDK's `sse_client`.

Two in-process gateway apps (`create_app` installs the bridge's routes) share Redis; the client's
`GET /sse` goes to replica A and every `POST /messages` is rewritten to replica B, so every answer
crosses replicas through Redis.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.sse import sse_client

from gateway.config import Settings
from gateway.http.app import create_app
from tests.asgi_server import serve
from tests.integration.conftest import StartSdkUpstream


class PostsTo(httpx2.AsyncHTTPTransport):
    """Sends every POST to another replica's port; counts requests per (method, port)."""

    def __init__(self, port: int, seen: Counter[tuple[str, int]]) -> None:
        super().__init__()
        self.port = port
        self.seen = seen

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            request.url = request.url.copy_with(port=self.port)
        self.seen[(request.method, request.url.port or 0)] += 1
        return await super().handle_async_request(request)


def legacy_app(upstream: str, redis_url: str, key_prefix: str) -> Any:
    return create_app(Settings(upstream=[upstream], redis_url=redis_url, key_prefix=key_prefix, metrics_port=0))


async def test_legacy_sse_client_with_posts_on_another_replica(
    sdk_upstream: StartSdkUpstream, redis_url: str, key_prefix: str
) -> None:
    upstream = sdk_upstream(event_store=True, retry_interval=100)
    seen: Counter[tuple[str, int]] = Counter()
    async with (
        serve(legacy_app(upstream, redis_url, key_prefix)) as replica_a,
        serve(legacy_app(upstream, redis_url, key_prefix)) as replica_b,
    ):
        port_a, port_b = httpx.URL(replica_a).port, httpx.URL(replica_b).port
        assert port_a and port_b

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            return httpx2.AsyncClient(
                headers=headers, timeout=timeout or httpx2.Timeout(10, read=60), transport=PostsTo(port_b, seen)
            )

        reported: list[float] = []
        logs: list[Any] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            reported.append(progress)

        async def on_log(params: types.LoggingMessageNotificationParams) -> None:
            logs.append(params.data)

        async with (
            sse_client(f"{replica_a}/sse", httpx_client_factory=factory) as (read, write),
            ClientSession(read, write, logging_callback=on_log) as session,
        ):
            init = await session.initialize()
            assert init.server_info.name == "u1"
            tools = {t.name for t in (await session.list_tools()).tools}
            assert {"echo", "slow_count", "notify_later"} <= tools
            echoed = await session.call_tool("echo", {"text": "legacy hello"})
            assert echoed.content[0].text == "legacy hello"  # type: ignore[union-attr]
            counted = await session.call_tool("slow_count", {"steps": 4, "delay": 0.1}, progress_callback=on_progress)
            assert counted.content[0].text == "counted 4"  # type: ignore[union-attr]
            assert reported == [1, 2, 3, 4]
            # the upstream closes the answer's stream mid-call (2025-11-25 polling): the bridge polls on
            polled = await session.call_tool("slow_count", {"steps": 4, "delay": 0.3, "close_stream_at": 2})
            assert polled.content[0].text == "counted 4"  # type: ignore[union-attr]
            await session.call_tool("notify_later", {"delay": 0.1, "text": "via redis"})
            assert "via redis" in logs
        # the stream stayed on A; every message went to B
        assert seen[("GET", port_a)] == 1
        assert seen[("POST", port_b)] >= 6
        assert not any(port == port_a for (method, port) in seen if method == "POST")


async def test_legacy_messages_errors(sdk_upstream: StartSdkUpstream, redis_url: str, key_prefix: str) -> None:
    upstream = sdk_upstream()
    async with serve(legacy_app(upstream, redis_url, key_prefix)) as url, httpx.AsyncClient(timeout=10) as client:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        missing = await client.post(f"{url}/messages", json=body)
        assert missing.status_code == 400
        unknown = await client.post(f"{url}/messages?session_id=nope", json=body)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "Could not find session"
        async with client.stream("GET", f"{url}/sse") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await anext(lines) == "event: endpoint"
            endpoint = (await anext(lines)).removeprefix("data: ")
            assert endpoint.startswith("/messages?session_id=")
            bad = await client.post(
                f"{url}{endpoint}", content=b"{not json", headers={"content-type": "application/json"}
            )
            assert bad.status_code == 400
            batch = await client.post(f"{url}{endpoint}", json=[body])
            assert batch.status_code == 400  # one message per POST in 2024-11-05
            # a genuine 2024-11-05 handshake, raw: the answer arrives as `event: message`
            init = {
                "jsonrpc": "2.0",
                "id": "init-1",
                "method": "initialize",
                "params": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {},
                    "clientInfo": {"name": "old", "version": "0"},
                },
            }
            accepted = await client.post(f"{url}{endpoint}", json=init)
            assert accepted.status_code == 202
            assert await anext(lines) == ""
            assert await anext(lines) == "event: message"
            answer = json.loads((await anext(lines)).removeprefix("data: "))
            assert answer["id"] == "init-1"
            assert answer["result"]["protocolVersion"] == "2024-11-05"
            await client.post(f"{url}{endpoint}", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            await client.post(f"{url}{endpoint}", json={**body, "id": 2})
            assert [await anext(lines) for _ in range(3)] == [
                "",
                "event: message",
                'data: {"jsonrpc":"2.0","id":2,"result":{}}',
            ]


async def test_legacy_routes_answer_503_when_redis_fails(
    sdk_upstream: StartSdkUpstream, redis_url: str, key_prefix: str
) -> None:
    app = legacy_app(sdk_upstream(), redis_url, key_prefix)
    async with serve(app) as url, httpx.AsyncClient(timeout=10) as client:
        redis = app.state.gateway.redis
        pool = redis.connection_pool
        await pool.disconnect()
        pool.connection_kwargs["port"] = 1  # nothing listens there: every command fails
        for conn in [*pool._get_free_connections(), *pool._get_in_use_connections()]:
            conn.port = 1  # pooled connections (the heartbeat's, the tail's) reconnect there too
        opened = await client.get(f"{url}/sse")
        assert opened.status_code == 503
        assert opened.json()["error"]["message"].startswith("session store unavailable")
        posted = await client.post(f"{url}/messages?session_id=abc", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert posted.status_code == 503
        assert posted.json()["jsonrpc"] == "2.0" and posted.json()["id"] is None
