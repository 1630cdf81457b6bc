"""The composition root's builder for governance: the policy's governor and the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from gateway.audit.sinks import RedisSink, Sink, StdoutSink
from gateway.audit.trail import AuditTrail
from gateway.config import Settings
from gateway.config.specs import csv
from gateway.http.wiring import Plan, StoreSide
from gateway.policy.governor import Governor
from gateway.store.quotas import Quotas
from gateway.supervisor import Supervisor


@dataclass(frozen=True)
class Governance:
    governor: Governor | None  # None: neither a policy nor an audit sink (the request path skips it)
    audit: AuditTrail | None


def build_audit(
    settings: Settings,
    plan: Plan,
    replica: str,
    store: StoreSide,
    client_ip: Callable[[Request], str],
    supervisor: Supervisor,
) -> Governance:
    """The reload loop and the Redis sink's writer are owned by the supervisor."""
    names = csv(settings.audit)  # checked by Settings
    counters = plan.policy_counters
    sinks: list[Sink] = []
    for name in names:
        if name == "stdout":
            sinks.append(StdoutSink(counters))
        else:
            redis_sink = RedisSink(store.redis, store.keys, counters, maxlen=settings.audit_maxlen)
            supervisor.spawn(redis_sink.run(), name="audit-redis")
            sinks.append(redis_sink)
    if plan.policy is not None:
        supervisor.spawn(plan.policy.run(), name="policy-reload")
    if plan.policy is None and not sinks:
        return Governance(None, None)
    governor = Governor(plan.policy, Quotas(store.redis, store.keys), counters, client_ip)
    audit = AuditTrail(sinks, replica=replica, with_arguments=settings.audit_arguments) if sinks else None
    return Governance(governor, audit)
