"""The policy's and the audit trail's Prometheus counters, in the gateway's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metrics import FastCounter


class PolicyCounters:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = FastCounter(
            "mcpgw_policy_decisions_total",
            "Requests decided by the policy, by result (allow, deny, limited) and deciding rule",
            ["result", "rule"],
            registry=registry,
        )
        self.quota_rejections = FastCounter(
            "mcpgw_quota_rejections_total", "Requests refused by a quota, by rule", ["rule"], registry=registry
        )
        self.reloads = FastCounter(
            "mcpgw_policy_reloads_total",
            "Policy file loads, by result (loaded, refused)",
            ["result"],
            registry=registry,
        )
        self.audit_written = FastCounter(
            "mcpgw_audit_records_total", "Audit records written, by sink", ["sink"], registry=registry
        )
        self.audit_dropped = FastCounter(
            "mcpgw_audit_dropped_total", "Audit records a sink failed to write, by sink", ["sink"], registry=registry
        )
