"""Upstream pools: placement of new sessions, and instance health.

Placement is round robin over the instances currently believed healthy. Health is derived
by every replica on its own (no shared state to go stale): an active probe per instance
(its pool's `--health-probe` kind and interval, sent by `probes.Prober`), plus passive
counting of refused connections, which opens an instance's circuit after `failures_to_open`
consecutive failures until a probe succeeds.
A replica probes all instances once before it reports ready, so a fresh replica never
places sessions on a dead instance.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import Gauge

from gateway import errors
from gateway.config.specs import Pool, ProbeSpec
from gateway.upstream.labels import instance_labels

log = logging.getLogger("gateway.upstream.pools")


@dataclass
class InstanceHealth:
    healthy: bool = True
    failures: int = 0
    changed: float = field(default_factory=time.monotonic)


class Pools:
    """Named pools; new sessions go round robin over a pool's healthy instances."""

    def __init__(self, pools: tuple[Pool, ...], *, failures_to_open: int = 3, gauge: Gauge | None = None) -> None:
        if not pools:
            raise errors.ConfigError("at least one --upstream NAME=URL is required")
        self._gauge = gauge  # mcpgw_upstream_healthy{pool, instance}: 1 while placed on
        self._pools = {p.name: p for p in pools}
        self._cycles = {p.name: itertools.cycle(p.instances) for p in pools}
        self.default = pools[0].name
        self._health = {url: InstanceHealth() for p in pools for url in p.instances}
        self._failures_to_open = failures_to_open
        for url in self._health:
            self._export(url, healthy=True)

    def names(self) -> list[str]:
        return list(self._pools)

    def instances(self) -> list[str]:
        return list(self._health)

    def get(self, name: str | None) -> Pool:
        pool = self._pools.get(name or self.default)
        if pool is None:
            raise errors.SessionNotFound(f"Unknown upstream pool {name!r}")
        return pool

    def pick(self, name: str, *, avoid: frozenset[str] = frozenset()) -> str:
        """Round robin over healthy instances not in `avoid`; 503 when there is none."""
        pool = self._pools[name]
        for _ in range(len(pool.instances)):
            url = next(self._cycles[name])
            if self._health[url].healthy and url not in avoid:
                return url
        raise errors.UpstreamUnavailable(f"No healthy upstream instance in pool {name!r}")

    def has_instance(self, name: str, url: str) -> bool:
        pool = self._pools.get(name)
        return pool is not None and url in pool.instances

    def is_healthy(self, url: str) -> bool:
        health = self._health.get(url)
        return health is not None and health.healthy

    def pool_ready(self, name: str) -> bool:
        return any(self._health[url].healthy for url in self._pools[name].instances)

    def report_failure(self, url: str) -> None:
        """Passive health: a refused connection; enough in a row open the circuit."""
        health = self._health.get(url)
        if health is None:
            return
        health.failures += 1
        if health.healthy and health.failures >= self._failures_to_open:
            self._set(url, healthy=False, reason=f"{health.failures} failed connections")

    def report_success(self, url: str) -> None:
        health = self._health.get(url)
        if health is not None:
            health.failures = 0
            if not health.healthy:
                self._set(url, healthy=True, reason="answered")

    def mark_down(self, url: str, reason: str) -> None:
        self._set(url, healthy=False, reason=reason)

    def _set(self, url: str, *, healthy: bool, reason: str) -> None:
        health = self._health[url]
        if health.healthy != healthy:
            health.healthy = healthy
            health.changed = time.monotonic()
            self._export(url, healthy=healthy)
            log.warning("upstream %s is now %s (%s)", url, "healthy" if healthy else "UNHEALTHY", reason)

    def _export(self, url: str, *, healthy: bool) -> None:
        if self._gauge is not None:
            for pool in self._pools.values():
                if url in pool.instances:  # labelled by host:port: never the URL's credentials or query
                    self._gauge.labels(pool.name, instance_labels(pool.instances)[url]).set(1 if healthy else 0)


class HealthChecker:
    """Active probes, each pool with its own probe kind and interval (`--health-probe`).

    One loop serves every instance: it probes the instances that are due, then sleeps until
    the next one is, so pools with different intervals need no task each.
    """

    def __init__(
        self,
        pools: Pools,
        probe: Callable[[str, ProbeSpec], Awaitable[bool]],
        specs: Mapping[str, ProbeSpec],
        *,
        fall: int = 2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._pools = pools
        self._probe = probe
        self._fall = fall  # consecutive failed probes before a serving instance is taken out
        self._clock = clock
        self._sleep = sleep
        # an instance listed by several pools is probed as its first pool says
        self._specs: dict[str, ProbeSpec] = {}
        for name in pools.names():
            for url in pools.get(name).instances:
                self._specs.setdefault(url, specs[name])
        self._due = dict.fromkeys(self._specs, 0.0)
        self._failed: dict[str, int] = {}
        self.rounds = 0

    def spec(self, url: str) -> ProbeSpec:
        return self._specs[url]

    async def check_all(self) -> None:
        """Probe every instance now (start-up, tests)."""
        await self._check(list(self._specs))

    async def _check(self, urls: list[str]) -> None:
        results = await asyncio.gather(*(self._probe(url, self._specs[url]) for url in urls))
        now = self._clock()
        for url, ok in zip(urls, results, strict=True):
            self._due[url] = now + self._specs[url].interval
            if ok:
                self._failed.pop(url, None)
                self._pools.report_success(url)
                continue
            self._failed[url] = failed = self._failed.get(url, 0) + 1
            # the first round (start-up) trusts one probe: a fresh replica must not send to a dead instance
            if failed >= self._fall or self.rounds == 0:
                self._pools.mark_down(url, f"{failed} health probe(s) failed ({self._specs[url].describe()})")
        self.rounds += 1

    async def run(self) -> None:
        while True:
            now = self._clock()
            due = [url for url, at in self._due.items() if at <= now]
            if due:
                await self._check(due)
            await self._sleep(max(0.0, min(self._due.values()) - self._clock()))
