"""Where each setting appears in `mcp-gateway --help`: one argparse group per concern.

Rules are data: every setting is named here exactly once (a test fails for a new setting that is not),
so `--help` stays readable as settings are added. Internals go under "advanced".
"""

from __future__ import annotations

from collections.abc import Mapping

GROUPS: Mapping[str, tuple[str, ...]] = {
    "upstreams": (
        "upstream",
        "instance_loss",
        "health_interval",
        "health_probe",
        "health_timeout",
        "upstream_header",
        "connect_timeout",
        "request_timeout",
        "upstream_pool_size",
        "forward_authorization",
        "upstream_era",
        "bridge_secret",
        "bridge_max_sessions",
        "bridge_session_idle",
        "upstream_acquire_timeout",
    ),
    "store": (
        "redis_url",
        "redis_cluster",
        "redis_sentinel",
        "redis_sentinel_master",
        "redis_max_connections",
        "key_prefix",
    ),
    "sessions and streams": (
        "session_ttl",
        "stream_maxlen",
        "stream_idle_timeout",
        "stream_abandon_timeout",
        "stream_retention",
        "lease_ttl",
        "keepalive_interval",
        "retry_ms",
        "replay_max_requests",
        "replay_max_answer_bytes",
        "idempotency_ttl",
        "idempotency_max_response_bytes",
    ),
    "security": (
        "auth_issuer",
        "auth_audience",
        "auth_jwks_url",
        "jwks_min_refresh",
        "auth_public_key",
        "auth_algorithms",
        "resource_url",
        "authorization_servers",
        "allowed_origins",
        "rate_limit",
        "max_sessions_per_client",
        "max_streams_per_client",
        "max_body_bytes",
        "max_header_bytes",
        "header_timeout",
        "body_idle_timeout",
        "max_connections",
        "max_connections_per_client",
        "trust_forwarded_for",
        "policy",
        "audit",
        "audit_arguments",
        "audit_maxlen",
    ),
    "tasks and cache": (
        "task_tools",
        "task_sync_input",
        "task_ttl",
        "task_poll_interval",
        "response_cache",
        "response_cache_max_bytes",
    ),
    "virtual servers": (
        "virtual_servers",
        "virtual_separator",
    ),
    "operations": (
        "config",
        "host",
        "port",
        "metrics_host",
        "metrics_port",
        "workers",
        "drain_timeout",
        "log_level",
        "log_format",
    ),
    "advanced": (
        "gc_young_threshold",
        "refusal_drain_bytes",
        "max_batch",
        "sse_max_line",
    ),
}


def group_of(setting: str) -> str:
    """The `--help` group of one setting; a setting missing from GROUPS is a bug (tests/test_cli.py)."""
    for title, names in GROUPS.items():
        if setting in names:
            return title
    raise KeyError(f"setting {setting!r} has no --help group in gateway/config/groups.py")
