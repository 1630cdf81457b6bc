"""Upstream pools with real processes: health-based placement, reinit and expire on instance loss."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol

import pytest

from tests.integration.careful_client import CarefulClient, SessionGone
from tests.integration.clients import sdk_client, text_of
from tests.integration.conftest import StartGateways, StartLoadBalancer, StartSdkUpstream, Upstream

ARGS = ("--log-format", "text", "--health-interval", "0.5", "--health-timeout", "0.5")


async def session_on(url: str, instance: str, attempts: int = 10) -> CarefulClient:
    """A careful client whose session the gateway placed on `instance` (by its whoami name)."""
    for _ in range(attempts):
        client = CarefulClient(url)
        await client.initialize()
        if await whoami(client) == instance:
            return client
        await client.aclose()
    raise AssertionError(f"no session landed on {instance}")


async def whoami(client: CarefulClient) -> str:
    answer = await client.request("tools/call", {"name": "whoami", "arguments": {}})
    return str(answer["result"]["content"][0]["text"])


def kill(upstreams: list[Upstream], name: str) -> None:
    (victim,) = [u for u in upstreams if u.name == name]
    victim.proc.kill(signal.SIGKILL)


class StartPool(Protocol):
    def __call__(self, pool: str = "default") -> str: ...


@pytest.fixture
def two_instances(
    sdk_upstream: StartSdkUpstream,
    gateway_cluster: StartGateways,
    load_balancer: StartLoadBalancer,
    key_prefix: str,
) -> StartPool:
    """Factory: SDK upstreams `u1` and `u2` as one pool (`default`, or `default@expire`...) behind
    three gateway replicas and a load balancer; returns the load balancer's URL."""

    def start(pool: str = "default") -> str:
        urls = [sdk_upstream(name="u1"), sdk_upstream(name="u2")]
        return load_balancer(gateway_cluster(3, {pool: urls}, key_prefix, ARGS))

    return start


async def test_new_sessions_avoid_a_dead_instance(two_instances: StartPool, sdk_upstreams: list[Upstream]) -> None:
    lb = two_instances()
    placed = set()
    for _ in range(6):
        async with CarefulClient(lb) as client:
            await client.initialize()
            placed.add(await whoami(client))
    assert placed == {"u1", "u2"}  # round robin uses both while both are up
    kill(sdk_upstreams, "u1")
    await asyncio.sleep(0.8)  # one health interval (0.5 s) plus a probe timeout
    for _ in range(9):
        async with CarefulClient(lb) as client:
            await client.initialize()
            assert await whoami(client) == "u2"


async def test_reinit_keeps_an_sdk_session_working_across_instance_death(
    two_instances: StartPool, sdk_upstreams: list[Upstream]
) -> None:
    lb = two_instances()
    async with sdk_client(lb) as (client, get_sid):
        first = text_of(await client.call_tool("whoami", {}))
        kill(sdk_upstreams, first)
        second = text_of(await client.call_tool("whoami", {}))
        assert second != first  # same gateway session, new upstream session elsewhere
        assert text_of(await client.call_tool("add", {"a": 1, "b": 1})) == "2"
        sid = get_sid()
        assert sid is not None


async def test_expire_gives_404_and_a_new_session_works(
    two_instances: StartPool, sdk_upstreams: list[Upstream]
) -> None:
    lb = two_instances("default@expire")
    client = await session_on(lb, "u1")
    try:
        kill(sdk_upstreams, "u1")
        with pytest.raises(SessionGone):
            await whoami(client)
    finally:
        await client.aclose()
    async with sdk_client(lb) as (fresh, _):  # the SDK client's re-initialize lands on u2
        assert text_of(await fresh.call_tool("whoami", {})) == "u2"
