"""Tracing: a small typed facade over OpenTelemetry (`api`), off by default and free when off."""
