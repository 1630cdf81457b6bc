"""Whether to trace, decided from the standard OpenTelemetry environment, and the tracer it gives.

Tracing is on as soon as an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and the `otel` extra is installed; `OTEL_SDK_DISABLED=true`
or `OTEL_TRACES_EXPORTER=none` keep it off. Only OTLP over HTTP with protobuf bodies is
exported: another protocol is a configuration error at start-up, not a silent fallback.
A missing extra is said once, loudly, and the gateway runs untraced.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.tracing.api import NOOP, Tracer

log = logging.getLogger("gateway.tracing")

PROTOCOLS = ("http/protobuf",)  # OTEL_EXPORTER_OTLP_PROTOCOL values the gateway exports with
EXPORTERS = ("otlp", "none")  # OTEL_TRACES_EXPORTER values it understands
EXTRA_HINT = "pip install 'mcp-session-gateway[otel]'"


@dataclass(frozen=True)
class TracingPlan:
    """Tracing was asked for; `build` makes the tracer (in the lifespan, once per process)."""

    endpoint: str
    env: Mapping[str, str]

    def build(self, instance: str) -> Tracer:
        try:
            from gateway.tracing import otel
        except ImportError as exc:
            log.warning(
                "tracing: %s is set but OpenTelemetry is not installed (%s); running untraced (%s)",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                EXTRA_HINT,
                exc,
            )
            return NOOP
        log.info("tracing: exporting spans to %s (OTLP/HTTP)", self.endpoint)
        return otel.build(instance=instance, env=self.env)


def plan(env: Mapping[str, str]) -> TracingPlan | None:
    """None: tracing off. Raises ConfigError for settings the gateway cannot honour."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
    unknown = [e for e in exporters if e not in EXPORTERS]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={','.join(unknown)} is not supported (use otlp or none)")
    if "otlp" not in exporters:
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or PROTOCOLS[0]
    ).strip()
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: the gateway exports OTLP over HTTP "
            "with protobuf bodies only (http/protobuf; collectors listen for it on port 4318)"
        )
    return TracingPlan(endpoint=endpoint, env=dict(env))
