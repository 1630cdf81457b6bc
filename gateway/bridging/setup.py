"""The bridge's part of the composition root: built in the app lifespan, eras detected before serving."""

from __future__ import annotations

import asyncio
import logging
import secrets

from gateway import errors
from gateway.bridging.eras import DiscoverProbe, EraBook, parse_era_pins
from gateway.bridging.onto_2025.bridge import Bridge
from gateway.bridging.onto_2025.handshake import Handshake
from gateway.bridging.onto_2025.listen import Listener
from gateway.bridging.onto_2025.pending import OpenRounds
from gateway.bridging.onto_2025.rounds import Sealer
from gateway.bridging.onto_2025.sessions import HeldSessions
from gateway.config import Settings
from gateway.metrics import Metrics
from gateway.store.client import Redis, translated
from gateway.store.keys import Keys
from gateway.supervisor import Supervisor
from gateway.tracing.api import Tracer
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.upstream.pools import Pools

log = logging.getLogger(__name__)


def check_settings(settings: Settings, pools: Pools) -> None:
    """Bad `--upstream-era` fails at start-up, before any IO."""
    parse_era_pins(settings.upstream_era, pools.names())


async def start_eras(
    settings: Settings,
    pools: Pools,
    redis: Redis,
    keys: Keys,
    upstream: UpstreamClient,
    headers: HeaderPolicy,
    supervisor: Supervisor,
) -> EraBook:
    """The era of every healthy instance known (from Redis, or probed) before the replica serves;
    come-backs watched. Both directions of the bridge ask this book (`era_of`)."""
    eras = EraBook(
        pools=pools,
        pins=parse_era_pins(settings.upstream_era, pools.names()),
        redis=redis,
        keys=keys,
        probe=DiscoverProbe(upstream, headers, max_body=settings.max_body_bytes),
    )
    # A slow or silent upstream must not keep the replica from serving: what is not known by then is
    # probed at its first request (`EraBook.era_of`).
    bound = 3 * settings.health_timeout
    try:
        await asyncio.wait_for(eras.detect_all(), timeout=bound)
    except TimeoutError:
        log.warning("era detection unfinished after %.1f s at start-up: the rest is probed at first use", bound)
    supervisor.spawn(eras.run(), name="era-detection")
    return eras


async def start_bridge(
    settings: Settings,
    eras: EraBook,
    pools: Pools,
    redis: Redis,
    keys: Keys,
    upstream: UpstreamClient,
    headers: HeaderPolicy,
    supervisor: Supervisor,
    metrics: Metrics,
    tracer: Tracer,
) -> Bridge:
    """2026-07-28 clients of 2025 instances: held sessions (and their reaper), the requestState key."""
    handshake = Handshake(upstream, headers, max_body=settings.max_body_bytes)
    sessions = HeldSessions(
        redis=redis,
        keys=keys,
        handshake=handshake,
        pools=pools,
        max_per_instance=settings.bridge_max_sessions,
        idle=settings.bridge_session_idle,
    )
    sealer = Sealer(await _secret(settings, redis, keys))
    open_rounds = OpenRounds(redis, keys)
    supervisor.spawn(sessions.run(), name="bridge-session-reaper")
    bridge = Bridge(
        pools=pools,
        eras=eras,
        sessions=sessions,
        handshake=handshake,
        upstream=upstream,
        supervisor=supervisor,
        metrics=metrics,
        max_body=settings.max_body_bytes,
        max_line=settings.sse_max_line,
        sealer=sealer,
        open_rounds=open_rounds,
        listener=Listener(
            sessions=sessions,
            handshake=handshake,
            upstream=upstream,
            supervisor=supervisor,
            keepalive=settings.keepalive_interval,
            max_line=settings.sse_max_line,
        ),
        tracer=tracer,
    )
    supervisor.spawn(open_rounds.run(bridge.abandoned), name="bridge-round-reaper")
    return bridge


async def _secret(settings: Settings, redis: Redis, keys: Keys) -> bytes:
    """`--bridge-secret`, or one random key made by the first replica to start and kept in Redis
    (every replica must seal and open the same `requestState`)."""
    if settings.bridge_secret:
        return settings.bridge_secret.encode()
    with translated():
        await redis.set(keys.bridge_secret(), secrets.token_hex(32), nx=True)
        stored = await redis.get(keys.bridge_secret())
    if stored is None:
        raise errors.StoreError("the bridge's requestState key vanished from the store")
    return stored if isinstance(stored, bytes) else str(stored).encode()
