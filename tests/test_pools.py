"""Placement and health of upstream instances: pure pool rules, and active probes over real HTTP."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from gateway import errors
from gateway.config.specs import Pool, ProbeSpec
from gateway.metrics import Metrics
from gateway.upstream.pools import HealthChecker, Pools
from gateway.upstream.probes import Prober
from tests.asgi_server import serve

A, B, C = "http://a/mcp", "http://b/mcp", "http://c/mcp"


def make() -> Pools:
    return Pools((Pool("main", (A, B, C)), Pool("solo", ("http://s/mcp",), on_instance_loss="expire")))


def test_round_robin_skips_unhealthy_and_avoided() -> None:
    pools = make()
    assert [pools.pick("main") for _ in range(6)] == [A, B, C, A, B, C]
    pools.mark_down(B, "test")
    assert [pools.pick("main") for _ in range(4)] == [A, C, A, C]
    assert {pools.pick("main", avoid=frozenset({A})) for _ in range(3)} == {C}
    assert pools.pool_ready("main") and not pools.is_healthy(B)


def test_no_healthy_instance_is_503_with_retry_after() -> None:
    pools = make()
    pools.mark_down("http://s/mcp", "test")
    assert not pools.pool_ready("solo")
    with pytest.raises(errors.UpstreamUnavailable) as info:
        pools.pick("solo")
    assert info.value.status == 503 and "Retry-After" in info.value.headers


def test_unknown_pool_is_404_and_default_is_first() -> None:
    pools = make()
    assert pools.get(None).name == "main" and pools.get("solo").on_instance_loss == "expire"
    with pytest.raises(errors.SessionNotFound):
        pools.get("nope")
    with pytest.raises(errors.ConfigError):
        Pools(())


def test_health_is_exported_per_pool_and_instance() -> None:
    metrics = Metrics()
    pools = Pools((Pool("main", (A, B)), Pool("also", (B,))), gauge=metrics.upstream_healthy)

    def healthy(pool: str, url: str) -> float | None:
        label = url.split("//")[1].split("/")[0] + ":80"  # host:port, never the URL (issue 35)
        return metrics.registry.get_sample_value("mcpgw_upstream_healthy", {"pool": pool, "upstream": label})

    assert healthy("main", A) == 1 and healthy("also", B) == 1
    pools.mark_down(B, "test")
    assert healthy("main", B) == 0 and healthy("also", B) == 0
    pools.report_success(B)
    assert healthy("main", B) == 1


def test_passive_failures_open_the_circuit_and_success_closes_it() -> None:
    pools = make()
    pools.report_failure(A)
    pools.report_failure(A)
    pools.report_success(A)  # a success resets the count
    pools.report_failure(A)
    pools.report_failure(A)
    assert pools.is_healthy(A)
    pools.report_failure(A)  # third in a row
    assert not pools.is_healthy(A)
    pools.report_success(A)
    assert pools.is_healthy(A)
    pools.report_failure("http://unknown/")  # ignored, never raises


class Toggle:
    """An instance whose probe answer the test controls."""

    def __init__(self) -> None:
        self.status = 405  # what an MCP endpoint answers a bare GET: alive

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"  # nothing listens once closed


async def test_health_checker_marks_dead_at_start_and_needs_two_failures_later() -> None:
    toggle = Toggle()
    async with serve(toggle) as url, aiohttp.ClientSession() as http:
        live, dead = f"{url}/mcp", dead_url()
        pools = Pools((Pool("p", (live, dead)),))
        checker = HealthChecker(pools, Prober(http, timeout=1.0), {"p": ProbeSpec("get", 60)}, fall=2)
        await checker.check_all()  # start-up round: one failed probe is enough
        assert pools.is_healthy(live) and not pools.is_healthy(dead)

        toggle.status = 503
        await checker.check_all()  # one failure while serving: a blip, still in
        assert pools.is_healthy(live)
        await checker.check_all()  # two in a row: out
        assert not pools.is_healthy(live)

        toggle.status = 200
        await checker.check_all()  # one good probe brings it back
        assert pools.is_healthy(live) and checker.rounds == 4


async def test_each_pool_is_probed_at_its_own_interval() -> None:
    """One loop, many schedules: instances are probed when due, by their pool's probe kind."""
    now = [0.0]
    calls: list[tuple[float, str, str]] = []

    async def probe(url: str, spec: ProbeSpec) -> bool:
        calls.append((now[0], url, spec.kind))
        return True

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] > 6.5:
            raise asyncio.CancelledError

    pools = Pools((Pool("fast", (A, B)), Pool("slow", (C,))))
    specs = {"fast": ProbeSpec("tcp", 1.0), "slow": ProbeSpec("discover", 3.0)}
    checker = HealthChecker(pools, probe, specs, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await checker.run()
    assert [t for t, u, _ in calls if u == C] == [0.0, 3.0, 6.0]
    assert [t for t, u, _ in calls if u == A] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert {(u, kind) for _, u, kind in calls} == {(A, "tcp"), (B, "tcp"), (C, "discover")}
