"""Scale-out mechanisms with real processes: takeover through replica liveness (not a lease TTL),
fencing of a paused replica (SIGSTOP/SIGCONT), and the multiplexed tail's bounded Redis connections.

Every assertion is about a mechanism (who pumped, what Redis holds, what the client received),
never about how long something took: the figures live in `bench/`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Callable

import redis.asyncio as aioredis

from gateway.store.nodes import shard_subscribers
from tests.integration.careful_client import CarefulClient, ReceivedEvent
from tests.integration.conftest import NO_CLIENT_LIMITS, StartGateways, StartSdkUpstream, StoreUnderTest
from tests.integration.procs import tail

STEPS = 20


def progress_values(events: list[ReceivedEvent]) -> list[float]:
    return [
        e.message["params"]["progress"]
        for e in events
        if isinstance(e.message, dict) and e.message.get("method") == "notifications/progress"
    ]


def assert_exactly_once(values: list[float], steps: int) -> None:
    counts = Counter(values)
    assert sorted(counts) == list(range(1, steps + 1)), f"lost: {set(range(1, steps + 1)) - set(counts)}"
    assert all(n == 1 for n in counts.values()), f"duplicated: {[v for v, n in counts.items() if n > 1]}"
    assert values == sorted(values), "out of order"


def args(lease_ttl: str, store: StoreUnderTest) -> tuple[str, ...]:
    return ("--log-format", "text", "--lease-ttl", lease_ttl, *store.gateway_args)


def after_progress(n: int, action: Callable[[], None]) -> Callable[[ReceivedEvent, list[ReceivedEvent]], bool]:
    """A drop predicate: on the first connection, after progress `n`, run `action` and drop."""

    def drop(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
        if event.connection == 0 and len(progress_values(events)) == n:
            action()
            return True
        return False

    return drop


async def test_killed_replica_is_taken_over_before_its_liveness_ttl(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, takeover_store: StoreUnderTest
) -> None:
    """A SIGKILLed replica's presence channel empties at once: its stream is adopted while its
    liveness key (TTL 30 s here) still exists, so the TTL played no part in the takeover."""
    upstream = sdk_upstream(event_store=True)
    a, b = gateway_cluster(2, {"default": upstream}, key_prefix, args("30", takeover_store))
    async with CarefulClient(a.url) as client:
        await client.initialize()
        assert client.session_id is not None

        def kill() -> None:
            os.kill(a.proc.pid, signal.SIGKILL)  # the POST went to A: A pumps the stream

        result = await client.call_tool_resumable(
            "slow_count",
            {"steps": STEPS, "delay": 0.1},
            drop_when=after_progress(3, kill),
            resume_url=b.url,
        )
    assert result.response.get("result", {}).get("content", [{}])[0].get("text") == f"counted {STEPS}", result.response
    assert_exactly_once(progress_values(result.events), STEPS)
    store = takeover_store.client
    found = [k.decode() async for k in store.scan_iter(match=f"{key_prefix}:replica:*:{a.proc.pid}:*")]
    assert len(found) == 1, found
    dead = found[0].removeprefix(f"{key_prefix}:replica:")
    # The dead replica's liveness key outlived the whole takeover: presence decided it.
    assert await store.exists(found[0]) == 1
    presence = f"{key_prefix}:presence:{dead}"
    assert (await shard_subscribers(store, [presence]))[presence].count == 0
    taken = tail(b.proc.log_path, 400)
    assert "taking over" in taken
    assert "reason presence_vanished: liveness key present, 0 presence subscriber(s) counted by" in taken, taken


async def test_paused_replica_never_writes_again_after_takeover(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, takeover_store: StoreUnderTest
) -> None:
    """SIGSTOP keeps the paused replica's sockets (and presence) open: its liveness key lapses and
    another replica adopts the stream by compare-and-set. After SIGCONT the old pump's writes are
    refused: the event log holds each upstream event once and the client saw each once."""
    upstream = sdk_upstream(event_store=True)
    a, b = gateway_cluster(2, {"default": upstream}, key_prefix, args("1", takeover_store))
    paused = False
    try:
        async with CarefulClient(a.url) as client:
            await client.initialize()

            def pause() -> None:
                nonlocal paused
                os.kill(a.proc.pid, signal.SIGSTOP)
                paused = True

            result = await client.call_tool_resumable(
                "slow_count",
                {"steps": STEPS, "delay": 0.15},
                drop_when=after_progress(3, pause),
                resume_url=b.url,
                resume_timeout=30,
            )
            session_id = client.session_id
    finally:
        if paused:
            os.kill(a.proc.pid, signal.SIGCONT)
    assert_exactly_once(progress_values(result.events), STEPS)
    await asyncio.sleep(1.5)  # the woken replica heartbeats, finds it lapsed and checks its leases
    store = takeover_store.client
    uids: list[bytes] = []
    async for key in store.scan_iter(match=f"{key_prefix}:{{{session_id}}}:x:*"):
        uids.extend(fields[b"u"] for _, fields in await store.xrange(key) if fields.get(b"u"))
    assert uids and len(uids) == len(set(uids)), "an upstream event was logged twice"
    log_a = tail(a.proc.log_path, 400)
    assert "taken over while this replica looked dead" in log_a or "lease lost" in log_a, log_a
    assert a.proc.alive(), "the paused replica kept running after SIGCONT"
    assert "reason liveness_expired: liveness key absent, 1 presence subscriber(s)" in tail(b.proc.log_path, 400)


async def test_tailing_deliveries_share_a_bounded_number_of_redis_connections(
    sdk_upstream: StartSdkUpstream, gateway_cluster: StartGateways, key_prefix: str, redis_url: str
) -> None:
    """Many deliveries on one replica tail streams another replica pumps; the tailing replica's
    Redis connections (named after it) stay within --redis-max-connections plus its pub/sub."""
    upstream = sdk_upstream(event_store=True)
    bound = 6
    a, b = gateway_cluster(
        2,
        {"default": upstream},
        key_prefix,
        ("--log-format", "text", "--redis-max-connections", str(bound), *NO_CLIENT_LIMITS),
    )
    calls = 120
    steps = 8
    seen: list[int] = []
    resumed = asyncio.Event()
    resumed_count = 0

    async def one() -> list[float]:
        nonlocal resumed_count
        async with CarefulClient(a.url, timeout=60) as client:
            await client.initialize()

            def drop(event: ReceivedEvent, events: list[ReceivedEvent]) -> bool:
                nonlocal resumed_count
                if event.connection == 1 and not any(e.connection == 1 for e in events[:-1]):
                    resumed_count += 1  # first event on the tailing replica
                    if resumed_count == calls:
                        resumed.set()
                return event.connection == 0 and len(progress_values(events)) == 1

            result = await client.call_tool_resumable(
                "slow_count", {"steps": steps, "delay": 0.4}, drop_when=drop, resume_url=b.url, resume_timeout=60
            )
            return progress_values(result.events)

    async def sample(pid: int) -> None:
        store = aioredis.from_url(redis_url)
        try:
            while True:
                try:
                    clients = await store.client_list()
                except (aioredis.ConnectionError, aioredis.TimeoutError):
                    continue  # a loaded machine: skip this sample, take the next
                seen.append(sum(1 for c in clients if f":{pid}:" in c.get("name", "")))
                await asyncio.sleep(0.1)
        finally:
            await store.aclose()

    sampler = asyncio.ensure_future(sample(b.proc.pid))
    results = await asyncio.gather(*(one() for _ in range(calls)))
    if sampler.done():
        sampler.result()  # the sampler failed: say why
    sampler.cancel()
    for values in results:
        assert_exactly_once(values, steps)
    assert resumed.is_set(), f"only {resumed_count} of {calls} calls resumed on the tailing replica"
    assert seen and max(seen) > 0, "the tailing replica's connections were not found by name"
    # the command pool, the tail's pub/sub connection and the heartbeat's two control connections
    assert max(seen) <= bound + 3, f"tailing replica held {max(seen)} Redis connections (bound {bound} + 3)"
