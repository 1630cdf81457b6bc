"""UpstreamClient against a real local HTTP server: no cookie kept between clients, connect retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway import errors
from gateway.metrics import Metrics
from gateway.upstream.client import HeaderPolicy, UpstreamClient, new_upstream_pool
from tests.integration.procs import free_port


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="{}", content_type="application/json")
        response.set_cookie("sticky", "client-one")
        return response

    app = web.Application()
    app.router.add_post("/mcp", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://localhost:{port}/mcp", seen
    finally:
        await runner.cleanup()


async def test_upstream_cookies_are_not_kept_for_the_next_client(upstream: tuple[str, list[str | None]]) -> None:
    url, seen = upstream
    http = new_upstream_pool(connect_timeout=2, pool_size=4)
    client = UpstreamClient(http, request_timeout=5, latency=Metrics().upstream_latency)
    try:
        first = await client.send("POST", url, {"Content-Type": "application/json"}, b"{}")
        assert "sticky=client-one" in first.headers.get("Set-Cookie", "")  # passed on to the client as is
        await first.read(1000)
        second = await client.send("POST", url, {"Content-Type": "application/json"}, b"{}")
        await second.read(1000)
        third = await client.send("POST", url, {"Cookie": "own=3"}, b"{}")
        await third.read(1000)
    finally:
        await http.close()
    assert seen == [None, None, "own=3"]  # the gateway's session never adds a stored cookie


async def test_refused_connection_is_retried_then_unavailable() -> None:
    http = new_upstream_pool(connect_timeout=1, pool_size=4)
    metrics = Metrics()
    client = UpstreamClient(http, request_timeout=5, latency=metrics.upstream_latency)
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    try:
        with pytest.raises(errors.UpstreamUnavailable):
            await client.send("POST", url, {}, b"{}")
        with pytest.raises(errors.UpstreamUnavailable):
            await client.send("POST", url, {}, b"{}", retry_connect=False)
    finally:
        await http.close()


CLIENT = [("Authorization", "Bearer for-the-gateway"), ("Accept", "*/*")]


@pytest.mark.parametrize(
    ("policy", "passed"),
    [
        (HeaderPolicy(), {"default": False, "other": False}),  # auth off, no pool asks: not passed on
        (HeaderPolicy(authorization_pools=frozenset({"other"})), {"default": False, "other": True}),
        (HeaderPolicy(authorization_pools=frozenset({"*"})), {"default": True, "other": True}),
        (
            HeaderPolicy(drop_authorization=True, authorization_pools=frozenset({"*"})),
            {"default": False, "other": False},
        ),
    ],
)
def test_the_client_authorization_reaches_only_the_pools_that_ask(
    policy: HeaderPolicy, passed: dict[str, bool]
) -> None:
    for pool, expected in passed.items():
        assert ("Authorization" in policy.build(CLIENT, pool)) is expected
        assert policy.build(CLIENT, pool)["Accept"] == "*/*"
