"""The virtual servers' endpoint built from the sides the composition root already has."""

from __future__ import annotations

from gateway.caching.service import ResponseCache
from gateway.metrics import Metrics
from gateway.replay.idempotent import Idempotency
from gateway.replay.replays import Replays
from gateway.store.claims import Claims
from gateway.store.client import Redis
from gateway.store.eventlog import EventLog
from gateway.store.keys import Keys
from gateway.store.limits import Limiter
from gateway.store.sessions import SessionStore
from gateway.streams.relay import Relay
from gateway.supervisor import Supervisor
from gateway.upstream.client import HeaderPolicy, UpstreamClient
from gateway.upstream.pools import Pools
from gateway.virtual.endpoint import VirtualEndpoint
from gateway.virtual.forwarding import Forwarder
from gateway.virtual.gets import Gets
from gateway.virtual.listening import Listener
from gateway.virtual.members import Members
from gateway.virtual.naming import VirtualServer
from gateway.virtual.record import VirtualSessions
from gateway.virtual.stateless import StatelessVirtual

# Health intervals (`retry`) after a member was opened during which another replica's older health
# view of its instance does not refuse it: a probe needs a couple of intervals to see an instance back.
TRUSTED_INTERVALS = 4


def build_virtual(
    servers: tuple[VirtualServer, ...],
    *,
    pools: Pools,
    redis: Redis,
    keys: Keys,
    sessions: SessionStore,
    event_log: EventLog,
    relay: Relay,
    upstream: UpstreamClient,
    headers: HeaderPolicy,
    limiter: Limiter,
    metrics: Metrics,
    supervisor: Supervisor,
    cache: ResponseCache | None,
    claims: Claims,
    replays: Replays,
    idempotency: Idempotency,
    max_body: int,
    retry: float,
    replica: str,
) -> VirtualEndpoint | None:
    """None when no `--virtual-server` is configured (the request path then never asks)."""
    if not servers:
        return None
    store = VirtualSessions(redis, keys, sessions)
    members = Members(
        pools=pools,
        upstream=upstream,
        policy=headers,
        sessions=store,
        redis=redis,
        max_body=max_body,
        trust_opened=retry * TRUSTED_INTERVALS,
    )
    listener = Listener(
        members=members, sessions=store, pools=pools, upstream=upstream, supervisor=supervisor, retry=retry
    )
    return VirtualEndpoint(
        servers=servers,
        members=members,
        forwarder=Forwarder(
            members=members,
            relay=relay,
            claims=claims,
            replays=replays,
            idempotency=idempotency,
            limiter=limiter,
            metrics=metrics,
            max_body=max_body,
            replica=replica,
        ),
        gets=Gets(listener=listener, relay=relay, log_=event_log, store=sessions, metrics=metrics),
        stateless=StatelessVirtual(pools=pools, upstream=upstream, policy=headers, cache=cache, max_body=max_body),
        sessions=store,
        store=sessions,
        relay=relay,
        limiter=limiter,
        metrics=metrics,
        max_body=max_body,
        replica=replica,
    )
