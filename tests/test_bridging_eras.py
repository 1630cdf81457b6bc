"""Era detection: the `--upstream-era` pins, reading a discover answer, and the EraBook on a real Redis."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from gateway import errors
from gateway.bridging.eras import Detection, EraBook, era_of_discover, parse_era_pins
from gateway.config.specs import Pool
from gateway.store.keys import Keys
from gateway.upstream.pools import Pools

A, B = "http://a/mcp", "http://b/mcp"


def test_pins_parse() -> None:
    assert parse_era_pins([], ["p", "q"]) == {"p": "auto", "q": "auto"}
    assert parse_era_pins(["p=2025", "q=2026;p=auto"], ["p", "q"]) == {"p": "auto", "q": "2026"}
    for bad in (["p"], ["p=2024"], ["nope=2025"]):
        with pytest.raises(errors.ConfigError):
            parse_era_pins(bad, ["p", "q"])


def test_discover_answers() -> None:
    modern = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2026-07-28"]}}).encode()
    assert era_of_discover(200, modern, False) == "2026"
    assert era_of_discover(200, b"data: " + modern + b"\n", True) == "2026"
    refused = b'{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: Server not initialized"},"id":null}'
    assert era_of_discover(400, refused, False) == "2025"
    old = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2025-11-25"]}}).encode()
    assert era_of_discover(200, old, False) == "2025"
    assert era_of_discover(200, b"<html>", False) == "2025"


class Probes:
    """A probe that answers from a table and counts what it was asked."""

    def __init__(self, eras: dict[str, str]) -> None:
        self.eras = eras
        self.asked: list[str] = []

    async def __call__(self, pool: str, instance: str) -> Detection:
        self.asked.append(instance)
        era = self.eras[instance]
        if era == "down":
            raise errors.UpstreamUnavailable("refused")
        return Detection("2025") if era == "2025" else Detection("2026")


def book(redis: aioredis.Redis, keys: Keys, probes: Probes, pins: dict[str, str] | None = None) -> EraBook:
    pools = Pools((Pool("p", (A, B)), Pool("q", ("http://c/mcp",))))
    return EraBook(pools=pools, pins=pins or {"p": "auto", "q": "2026"}, redis=redis, keys=keys, probe=probes)


async def test_detected_once_then_remembered_here_and_in_redis(redis: aioredis.Redis, keys: Keys) -> None:
    probes = Probes({A: "2025", B: "2026"})
    first = book(redis, keys, probes)
    await first.detect_all()
    assert sorted(probes.asked) == [A, B]  # the pinned pool is never probed
    assert [await first.era_of("p", A) for _ in range(3)] == ["2025"] * 3
    assert await first.era_of("p", B) == "2026"
    assert await first.era_of("q", "http://c/mcp") == "2026"
    assert await first.initialize_result(A) is None
    await first.keep_initialized(A, {"serverInfo": {"name": A}})
    assert len(probes.asked) == 2  # no probe per request
    second = book(redis, keys, probes)  # another replica starting: Redis knows both
    await second.detect_all()
    assert await second.era_of("p", A) == "2025"
    assert await second.initialize_result(A) == {"serverInfo": {"name": A}}
    assert len(probes.asked) == 2


async def test_an_unreachable_instance_passes_through_and_is_asked_again(redis: aioredis.Redis, keys: Keys) -> None:
    probes = Probes({A: "down", B: "2026"})
    eras = book(redis, keys, probes)
    await eras.detect_all()  # logs, does not fail the start
    assert await eras.era_of("p", A) == "2026"
    probes.eras[A] = "2025"
    assert await eras.era_of("p", A) == "2025"
    assert probes.asked.count(A) == 3


async def test_a_pin_wins(redis: aioredis.Redis, keys: Keys) -> None:
    probes = Probes({A: "2025", B: "2025"})
    eras = book(redis, keys, probes, pins={"p": "2026", "q": "2025"})
    await eras.detect_all()
    assert await eras.era_of("p", A) == "2026" and eras.era_known("q", "http://c/mcp") == "2025"
    assert probes.asked == []


async def test_an_instance_that_comes_back_is_probed_again(redis: aioredis.Redis, keys: Keys) -> None:
    probes = Probes({A: "2025", B: "2025"})
    eras = book(redis, keys, probes)
    await eras.detect_all()
    await eras.keep_initialized(A, {"serverInfo": {}})
    pools = eras._pools
    pools.mark_down(A, "test")
    await eras.check_comebacks()  # seen down
    probes.eras[A] = "2026"  # replaced by a 2026 server while it was down
    pools.report_success(A)
    await eras.check_comebacks()  # seen back: probed again
    assert probes.asked.count(A) == 2
    assert eras.era_known("p", A) == "2026"
    assert await eras.initialize_result(A) is None  # a new server: its InitializeResult is learnt again
    assert await redis.hget(keys.upstream_era(A), "era") == b"2026"
